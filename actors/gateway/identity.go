package gateway

import (
	"context"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// The identity methods of the façade: each hands the call to the identity
// service (package identity), so the HTTP layer keeps one ControlPlane to
// talk to. The doc comments of package identity say what each does.

// Authenticate resolves a bearer token (a JWT or an otx_ API token).
func (g *Gateway) Authenticate(ctx context.Context, bearer string) (*messages.Principal, error) {
	return g.id.Authenticate(ctx, bearer)
}

// Login checks an email and password and starts a session.
func (g *Gateway) Login(ctx context.Context, req messages.LoginRequest, source string) (*messages.TokenPair, error) {
	return g.id.Login(ctx, req, source)
}

// Refresh rotates a refresh token and issues a new access token.
func (g *Gateway) Refresh(ctx context.Context, refreshToken, source string) (*messages.TokenPair, error) {
	return g.id.Refresh(ctx, refreshToken, source)
}

// Logout revokes the session a refresh token belongs to.
func (g *Gateway) Logout(ctx context.Context, refreshToken string) error {
	return g.id.Logout(ctx, refreshToken)
}

// AllowAnonymous takes one request of source's budget for unauthenticated
// paths, or answers rate_limited with the wait.
func (g *Gateway) AllowAnonymous(source string) error { return g.id.AllowAnonymous(source) }

// CreateUser adds a user.
func (g *Gateway) CreateUser(ctx context.Context, req messages.CreateUserRequest) (*messages.UserView, error) {
	return g.id.CreateUser(ctx, req)
}

// GetUser returns a user by id.
func (g *Gateway) GetUser(ctx context.Context, id string) (*messages.UserView, error) {
	return g.id.GetUser(ctx, id)
}

// ListUsers returns one page of users in creation order.
func (g *Gateway) ListUsers(ctx context.Context, page store.Page) ([]messages.UserView, string, error) {
	return g.id.ListUsers(ctx, page)
}

// UpdateMe changes the caller's display name and password.
func (g *Gateway) UpdateMe(ctx context.Context, p messages.Principal, req messages.UpdateMeRequest) (*messages.UserView, error) {
	return g.id.UpdateMe(ctx, p, req)
}

// SetRole changes a user's role.
func (g *Gateway) SetRole(ctx context.Context, id, role string) (*messages.UserView, error) {
	return g.id.SetRole(ctx, id, role)
}

// DeleteUser removes a user, ends its sessions and deletes its API tokens.
func (g *Gateway) DeleteUser(ctx context.Context, id string) error { return g.id.DeleteUser(ctx, id) }

// BootstrapAdmin creates the first admin of a new cluster.
func (g *Gateway) BootstrapAdmin(ctx context.Context, email, password string) (created bool, generated string, err error) {
	return g.id.BootstrapAdmin(ctx, email, password)
}

// CreateAPIToken creates a token for the caller and returns it in plaintext.
func (g *Gateway) CreateAPIToken(ctx context.Context, p messages.Principal, req messages.CreateAPITokenRequest) (*messages.CreatedAPIToken, error) {
	return g.id.CreateAPIToken(ctx, p, req)
}

// ListAPITokens lists owner's tokens, or every token for owner "".
func (g *Gateway) ListAPITokens(ctx context.Context, owner string, page store.Page) ([]messages.APITokenView, string, error) {
	return g.id.ListAPITokens(ctx, owner, page)
}

// RevokeAPIToken deletes a token of owner's (anyone's for owner "").
func (g *Gateway) RevokeAPIToken(ctx context.Context, owner, id string) error {
	return g.id.RevokeAPIToken(ctx, owner, id)
}

// Audit records an entry without waiting for it to be written.
func (g *Gateway) Audit(entry messages.AuditEntry) { g.id.Audit(entry) }

// ListAudit returns one page of the audit log, oldest first.
func (g *Gateway) ListAudit(ctx context.Context, page store.Page) ([]messages.AuditEntry, string, error) {
	return g.id.ListAudit(ctx, page)
}
