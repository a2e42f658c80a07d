package server

import (
	"context"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// fakeIdentity is the identity side of fakeCP: a fixed token per role and a
// record of audit entries. The real identity (hashing, JWTs, refresh
// families) is tested in security/, actors/gateway and the etcd e2e.
type fakeIdentity struct {
	mu     sync.Mutex
	tokens map[string]messages.Principal
	audits []messages.AuditEntry
	// loginErr, when set, is what Login fails with.
	loginErr error
	// authErr, when set, is what Authenticate fails with.
	authErr error
}

func newFakeIdentity() *fakeIdentity {
	f := &fakeIdentity{tokens: map[string]messages.Principal{}}
	for _, r := range security.Roles() {
		f.tokens[tokenFor(r)] = principalFor(r)
	}
	return f
}

// tokenFor is the bearer token the fake accepts for a user of role r.
func tokenFor(r security.Role) string { return "tok-" + string(r) }

// principalFor is the user of role r: user id "u-<role>".
func principalFor(r security.Role) messages.Principal {
	return messages.Principal{UserID: "u-" + string(r), Email: string(r) + "@example.com", Role: string(r)}
}

func (f *fakeIdentity) Authenticate(_ context.Context, bearer string) (*messages.Principal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.authErr != nil {
		return nil, f.authErr
	}
	p, ok := f.tokens[bearer]
	if !ok {
		return nil, messages.Errorf(messages.KindUnauthenticated, "unauthenticated", "unknown token")
	}
	return &p, nil
}

func (f *fakeIdentity) Login(_ context.Context, req messages.LoginRequest, _ string) (*messages.TokenPair, error) {
	if f.loginErr != nil {
		return nil, f.loginErr
	}
	if req.Password != "correct-horse-battery-staple-9" {
		return nil, messages.Errorf(messages.KindUnauthenticated, "invalid_credentials", "wrong email or password")
	}
	return &messages.TokenPair{AccessToken: tokenFor(security.RoleAdmin), RefreshToken: "r-1", ExpiresIn: 900, TokenType: "Bearer"}, nil
}

func (f *fakeIdentity) Refresh(_ context.Context, refreshToken, _ string) (*messages.TokenPair, error) {
	if refreshToken != "r-1" {
		return nil, messages.Errorf(messages.KindUnauthenticated, "unauthenticated", "refresh token revoked")
	}
	return &messages.TokenPair{AccessToken: tokenFor(security.RoleAdmin), RefreshToken: "r-2", ExpiresIn: 900, TokenType: "Bearer"}, nil
}

func (f *fakeIdentity) Logout(context.Context, string) error { return nil }

func (f *fakeIdentity) AllowAnonymous(string) error { return nil }

func fakeUser(id, role string) *messages.UserView {
	now := time.Now().UTC()
	return &messages.UserView{ID: id, Email: id + "@example.com", Role: role, CreatedAt: now, UpdatedAt: now, Revision: 2}
}

func (f *fakeIdentity) CreateUser(_ context.Context, req messages.CreateUserRequest) (*messages.UserView, error) {
	u := fakeUser(messages.NewID(), req.Role)
	u.Email = messages.NormalizeEmail(req.Email)
	return u, nil
}

func (f *fakeIdentity) GetUser(_ context.Context, id string) (*messages.UserView, error) {
	return fakeUser(id, string(security.RoleViewer)), nil
}

func (f *fakeIdentity) ListUsers(context.Context, store.Page) ([]messages.UserView, string, error) {
	return []messages.UserView{*fakeUser("u-admin", "admin")}, "", nil
}

func (f *fakeIdentity) UpdateMe(_ context.Context, p messages.Principal, req messages.UpdateMeRequest) (*messages.UserView, error) {
	u := fakeUser(p.UserID, p.Role)
	if req.DisplayName != nil {
		u.DisplayName = *req.DisplayName
	}
	return u, nil
}

func (f *fakeIdentity) SetRole(_ context.Context, id, role string) (*messages.UserView, error) {
	return fakeUser(id, role), nil
}

func (f *fakeIdentity) DeleteUser(context.Context, string) error { return nil }

func (f *fakeIdentity) CreateAPIToken(_ context.Context, p messages.Principal, req messages.CreateAPITokenRequest) (*messages.CreatedAPIToken, error) {
	role := req.Role
	if role == "" {
		role = p.Role
	}
	return &messages.CreatedAPIToken{Token: "otx_fake", APIToken: messages.APITokenView{
		ID: messages.NewID(), Name: req.Name, Owner: p.UserID, Role: role, CreatedAt: time.Now().UTC(), Revision: 1}}, nil
}

func (f *fakeIdentity) ListAPITokens(context.Context, string, store.Page) ([]messages.APITokenView, string, error) {
	return nil, "", nil
}

func (f *fakeIdentity) RevokeAPIToken(context.Context, string, string) error { return nil }

func (f *fakeIdentity) Audit(e messages.AuditEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.audits = append(f.audits, e)
}

func (f *fakeIdentity) ListAudit(context.Context, store.Page) ([]messages.AuditEntry, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]messages.AuditEntry(nil), f.audits...), "", nil
}

// auditLog returns the entries recorded so far.
func (f *fakeIdentity) auditLog() []messages.AuditEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]messages.AuditEntry(nil), f.audits...)
}
