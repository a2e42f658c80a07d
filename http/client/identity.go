package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/http/failover"
	"github.com/otherix/otherix/messages"
)

// Login exchanges an email and a password for a session: a short-lived
// access token (JWT) and a refresh token. It does not change the client's
// own credentials; build a client WithSession from the pair.
func (c *Client) Login(ctx context.Context, email, password string, opts ...CallOption) (*messages.TokenPair, error) {
	var p messages.TokenPair
	// Safe on another replica after a lost answer: a second login only
	// makes a second session.
	ctx = failover.Repeatable(ctx)
	if _, err := c.do(ctx, http.MethodPost, "/v1/auth/login", nil, messages.LoginRequest{Email: email, Password: password}, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// Refresh rotates a refresh token: the answer holds a new access token and a
// new refresh token, and the one sent is no longer valid. Sending a rotated
// token again is treated as theft and ends the whole session.
func (c *Client) Refresh(ctx context.Context, refreshToken string, opts ...CallOption) (*messages.TokenPair, error) {
	var p messages.TokenPair
	// Safe on another replica after a lost answer: the server gives a
	// refresh token rotated out within auth.refresh_grace the same new pair
	// of its session (and without a grace, not repeating it would end the
	// session just the same: the client could not use the lost pair).
	ctx = failover.Repeatable(ctx)
	if _, err := c.do(ctx, http.MethodPost, "/v1/auth/refresh", nil, messages.RefreshRequest{RefreshToken: refreshToken}, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// Logout ends the session that refreshToken belongs to.
func (c *Client) Logout(ctx context.Context, refreshToken string, opts ...CallOption) error {
	// Ending a session twice ends it once.
	_, err := c.do(failover.Repeatable(ctx), http.MethodPost, "/v1/auth/logout", nil, messages.RefreshRequest{RefreshToken: refreshToken}, nil, opts)
	return err
}

// Me returns the user the client's credentials belong to.
func (c *Client) Me(ctx context.Context, opts ...CallOption) (*messages.UserView, error) {
	return c.user(ctx, http.MethodGet, "/v1/users/me", nil, opts)
}

// UpdateMe changes the caller's display name or password (which needs the
// current one). A password change ends every session of the user.
func (c *Client) UpdateMe(ctx context.Context, req messages.UpdateMeRequest, opts ...CallOption) (*messages.UserView, error) {
	return c.user(ctx, http.MethodPatch, "/v1/users/me", req, opts)
}

// CreateUser creates a user (admin).
func (c *Client) CreateUser(ctx context.Context, req messages.CreateUserRequest, opts ...CallOption) (*messages.UserView, error) {
	return c.user(ctx, http.MethodPost, "/v1/users", req, opts)
}

// ListUsers returns one page of users (admin) and the next page's cursor.
func (c *Client) ListUsers(ctx context.Context, o ListOptions, opts ...CallOption) ([]messages.UserView, string, error) {
	var l list[messages.UserView]
	if _, err := c.do(ctx, http.MethodGet, "/v1/users", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// GetUser returns a user by id (admin).
func (c *Client) GetUser(ctx context.Context, id string, opts ...CallOption) (*messages.UserView, error) {
	return c.user(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(id), nil, opts)
}

// SetRole changes a user's role (admin).
func (c *Client) SetRole(ctx context.Context, id, role string, opts ...CallOption) (*messages.UserView, error) {
	return c.user(ctx, http.MethodPut, "/v1/users/"+url.PathEscape(id)+"/role", messages.SetRoleRequest{Role: role}, opts)
}

// DeleteUser deletes a user (admin).
func (c *Client) DeleteUser(ctx context.Context, id string, opts ...CallOption) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(id), nil, nil, nil, opts)
	return err
}

func (c *Client) user(ctx context.Context, method, path string, in any, opts []CallOption) (*messages.UserView, error) {
	var u messages.UserView
	if _, err := c.do(ctx, method, path, nil, in, &u, opts); err != nil {
		return nil, err
	}
	return &u, nil
}

// CreateAPIToken creates a long-lived otx_ token. The answer is the only
// time the token itself is shown.
func (c *Client) CreateAPIToken(ctx context.Context, req messages.CreateAPITokenRequest, opts ...CallOption) (*messages.CreatedAPIToken, error) {
	var t messages.CreatedAPIToken
	if _, err := c.do(ctx, http.MethodPost, "/v1/tokens", nil, req, &t, opts); err != nil {
		return nil, err
	}
	return &t, nil
}

// ListAPITokens returns one page of the caller's API tokens, or with all
// (admin) everybody's, and the next page's cursor.
func (c *Client) ListAPITokens(ctx context.Context, all bool, o ListOptions, opts ...CallOption) ([]messages.APITokenView, string, error) {
	q := o.query()
	if all {
		q.Set("all", "true")
	}
	var l list[messages.APITokenView]
	if _, err := c.do(ctx, http.MethodGet, "/v1/tokens", q, nil, &l, opts); err != nil {
		return nil, "", err
	}
	return l.Items, l.NextCursor, nil
}

// RevokeAPIToken revokes an API token by id.
func (c *Client) RevokeAPIToken(ctx context.Context, id string, opts ...CallOption) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, nil, opts)
	return err
}

// ListAudit returns one page of the audit log (admin) and the next page's
// cursor.
func (c *Client) ListAudit(ctx context.Context, o ListOptions, opts ...CallOption) ([]messages.AuditEntry, string, error) {
	var l list[messages.AuditEntry]
	if _, err := c.do(ctx, http.MethodGet, "/v1/audit", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}
