//go:build etcd

package identity_test

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

const (
	adminEmail = "Admin@Example.com"
	adminPass  = "plum-otter-lantern-93"
	devPass    = "quiet-violet-harbor-17"
)

// startService runs the identity service over a fresh embedded etcd member.
func startService(t *testing.T, cfg identity.Config) (*identity.Service, *store.Store) {
	t.Helper()
	st := storetest.New(t)
	svc, err := identity.New(t.Context(), st, cfg, quietLog())
	if err != nil {
		t.Fatalf("start identity: %v", err)
	}
	t.Cleanup(svc.Close) // runs before the member closes
	return svc, st
}

// startIdentity runs the identity service with a bootstrapped admin.
func startIdentity(t *testing.T, cfg identity.Config) (*identity.Service, *store.Store) {
	t.Helper()
	svc, st := startService(t, cfg)
	created, gen, err := svc.BootstrapAdmin(t.Context(), adminEmail, adminPass)
	if err != nil || !created || gen != "" {
		t.Fatalf("bootstrap admin = %v %q %v", created, gen, err)
	}
	return svc, st
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func wantCode(t *testing.T, err error, code string) *messages.Error {
	t.Helper()
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	return e
}

func login(t *testing.T, svc *identity.Service, email, pw string) *messages.TokenPair {
	t.Helper()
	pair, err := svc.Login(t.Context(), messages.LoginRequest{Email: email, Password: pw}, "192.0.2.1")
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	if pair.TokenType != "Bearer" || pair.ExpiresIn != 900 || pair.AccessToken == "" || pair.RefreshToken == "" {
		t.Fatalf("login answered %+v", pair)
	}
	return pair
}

func wantUnauthenticated(t *testing.T, err error) {
	t.Helper()
	e := wantCode(t, err, "unauthenticated")
	if e.Message != "missing, invalid or expired credentials" {
		t.Fatalf("message %q leaks detail", e.Message)
	}
}

func TestLoginRefreshReuseRevokesFamily(t *testing.T) {
	// No grace: the replay below comes at once (the grace and its end are
	// TestRefreshGraceKeepsSession's).
	svc, _ := startIdentity(t, identity.Config{RefreshGrace: -1})
	ctx := t.Context()
	pair := login(t, svc, "admin@example.com", adminPass)
	p, err := svc.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Email != "admin@example.com" || p.Role != "admin" || p.TokenID != "" || p.UserID == "" {
		t.Fatalf("principal %+v", p)
	}
	second, err := svc.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if second.RefreshToken == pair.RefreshToken {
		t.Fatal("refresh did not rotate")
	}
	if _, err := svc.Authenticate(ctx, second.AccessToken); err != nil {
		t.Fatalf("refreshed access token: %v", err)
	}
	// Replaying the rotated-out token is theft: the family is revoked...
	_, err = svc.Refresh(ctx, pair.RefreshToken, "198.51.100.7")
	wantUnauthenticated(t, err)
	// ...so the newest token, held by the legitimate client, fails too.
	_, err = svc.Refresh(ctx, second.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)

	// Garbage and logout.
	_, err = svc.Refresh(ctx, "otr_nope", "192.0.2.1")
	wantUnauthenticated(t, err)
	third := login(t, svc, adminEmail, adminPass)
	wantUnauthenticated(t, svc.Logout(ctx, "junk"))
	if err := svc.Logout(ctx, third.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Refresh(ctx, third.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	// A well-formed token of an unknown family logs out quietly.
	tok, _, _ := security.NewRefreshToken()
	if err := svc.Logout(ctx, tok); err != nil {
		t.Fatalf("logout unknown family: %v", err)
	}
}

func TestLoginFailuresLookAlike(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{})
	_, errUnknown := svc.Login(t.Context(), messages.LoginRequest{Email: "nobody@example.com", Password: adminPass}, "192.0.2.1")
	_, errWrong := svc.Login(t.Context(), messages.LoginRequest{Email: adminEmail, Password: "wrong-password-123"}, "192.0.2.2")
	a, b := wantCode(t, errUnknown, "invalid_credentials"), wantCode(t, errWrong, "invalid_credentials")
	if a.Message != b.Message || a.Kind != b.Kind {
		t.Fatalf("unknown user %+v vs wrong password %+v", a, b)
	}
}

func TestLoginRateLimits(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{LoginPerSource: 3, LoginPerAccount: 2})
	ctx := t.Context()
	try := func(email, source string) error {
		_, err := svc.Login(ctx, messages.LoginRequest{Email: email, Password: "wrong-password-123"}, source)
		return err
	}
	// Per account and source: two attempts from one source (the email
	// normalised), then refused there, even with the right password; another
	// source is not affected.
	wantCode(t, try(adminEmail, "10.0.0.1"), "invalid_credentials")
	wantCode(t, try(strings.ToUpper(adminEmail), "10.0.0.1"), "invalid_credentials")
	_, err := svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: adminPass}, "10.0.0.1")
	wantCode(t, err, "rate_limited")
	if _, err := svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: adminPass}, "10.0.0.3"); err != nil {
		t.Fatalf("right password from another source: %v", err)
	}
	// Per source: three attempts at different accounts, then refused.
	for _, e := range []string{"a@x.io", "b@x.io", "c@x.io"} {
		wantCode(t, try(e, "10.9.9.9"), "invalid_credentials")
	}
	wantCode(t, try("d@x.io", "10.9.9.9"), "rate_limited")
}

func TestAuthenticateRejectsBadJWTs(t *testing.T) {
	svc, st := startIdentity(t, identity.Config{})
	ctx := t.Context()
	pair := login(t, svc, adminEmail, adminPass)
	parts := strings.Split(pair.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("access token %q", pair.AccessToken)
	}
	// Tampered claims under the original signature.
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(claims), `"role":"admin"`, `"role":"viewer"`, 1)
	if forged == string(claims) {
		t.Fatalf("claims %s carry no admin role to tamper with", claims)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
	// alg none with the same claims and no signature.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	// Expired: signed by the cluster's own ring two hours ago.
	ring, _, err := st.KeyRing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := svc.Authenticate(ctx, pair.AccessToken)
	expired, _, err := ring.Issue(p.UserID, security.RoleAdmin, time.Now().Add(-2*time.Hour), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by a key the cluster never had.
	stranger, _, _ := security.NewKeyRing(time.Now()).Issue(p.UserID, security.RoleAdmin, time.Now(), time.Minute)
	bad := map[string]string{
		"empty": "", "tampered": tampered, "alg none": none, "expired": expired, "unknown key": stranger,
		"truncated": pair.AccessToken[:len(pair.AccessToken)-5], "otx garbage": "otx_short",
		"unknown otx": func() string { tok, _, _ := security.NewAPIToken(); return tok }(),
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := svc.Authenticate(ctx, tok)
			wantUnauthenticated(t, err)
		})
	}
}

func TestAPITokenLifecycle(t *testing.T) {
	svc, st := startIdentity(t, identity.Config{AuthCacheTTL: 300 * time.Millisecond})
	ctx := t.Context()
	dev, err := svc.CreateUser(ctx, messages.CreateUserRequest{Email: "Dev@Example.com", Role: "developer", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Email != "dev@example.com" {
		t.Fatalf("email stored as %q", dev.Email)
	}
	_, err = svc.CreateUser(ctx, messages.CreateUserRequest{Email: "dev@example.com", Role: "viewer", Password: devPass})
	wantCode(t, err, "user_email_conflict")
	_, err = svc.CreateUser(ctx, messages.CreateUserRequest{Email: "x@example.com", Role: "root", Password: devPass})
	wantCode(t, err, "invalid_role")
	_, err = svc.CreateUser(ctx, messages.CreateUserRequest{Email: "x@example.com", Role: "viewer", Password: "short"})
	wantCode(t, err, "password_too_short")

	p := messages.Principal{UserID: dev.ID, Email: dev.Email, Role: "developer"}
	_, err = svc.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", Role: "admin"})
	wantCode(t, err, "role_exceeds_caller")
	_, err = svc.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", TTL: "forever"})
	wantCode(t, err, "invalid_ttl")
	_, err = svc.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", TTL: "9000h"})
	wantCode(t, err, "invalid_ttl")

	created, err := svc.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", Role: "viewer", TTL: "720h"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Token, "otx_") || created.APIToken.Role != "viewer" || created.APIToken.ExpiresAt == nil {
		t.Fatalf("created %+v", created)
	}
	got, err := svc.Authenticate(ctx, created.Token)
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != dev.ID || got.Role != "viewer" || got.TokenID != created.APIToken.ID {
		t.Fatalf("principal %+v", got)
	}
	// A wrong secret under a real id fails.
	wrong := created.Token[:len(created.Token)-1] + map[bool]string{true: "A", false: "B"}[!strings.HasSuffix(created.Token, "A")]
	_, err = svc.Authenticate(ctx, wrong)
	wantUnauthenticated(t, err)

	// Lists: the owner's and everyone's; another owner's revoke is not found.
	mine, _, err := svc.ListAPITokens(ctx, dev.ID, store.Page{})
	if err != nil || len(mine) != 1 {
		t.Fatalf("list mine = %v %v", mine, err)
	}
	if err := svc.RevokeAPIToken(ctx, "someone-else", created.APIToken.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("revoke by another owner = %v, want not found", err)
	}

	// A second replica caches the token; revoking on the first stops it
	// there within the cache TTL.
	svc2, err := identity.New(ctx, st, identity.Config{AuthCacheTTL: 300 * time.Millisecond}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	if _, err := svc2.Authenticate(ctx, created.Token); err != nil {
		t.Fatal(err)
	}
	if err := svc.RevokeAPIToken(ctx, dev.ID, created.APIToken.ID); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Authenticate(ctx, created.Token)
	wantUnauthenticated(t, err) // at once on the replica that revoked
	if !testutil.Until(3*time.Second, 5*time.Millisecond, func() bool {
		_, err := svc2.Authenticate(ctx, created.Token)
		return err != nil
	}) {
		t.Fatal("revoked token still works on the second replica after 3s")
	}
}

func TestLastAdminAndDelete(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{})
	ctx := t.Context()
	admin, err := svc.Authenticate(ctx, login(t, svc, adminEmail, adminPass).AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.SetRole(ctx, admin.UserID, "viewer")
	wantCode(t, err, "last_admin")
	wantCode(t, svc.DeleteUser(ctx, admin.UserID), "last_admin")
	_, err = svc.SetRole(ctx, admin.UserID, "superuser")
	wantCode(t, err, "invalid_role")

	other, err := svc.CreateUser(ctx, messages.CreateUserRequest{Email: "second@example.com", Role: "admin", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	v, err := svc.SetRole(ctx, admin.UserID, "operator")
	if err != nil || v.Role != "operator" {
		t.Fatalf("demote with a second admin = %+v %v", v, err)
	}
	// The demoted admin's JWT now acts as operator (user cache dropped at once).
	pair := login(t, svc, adminEmail, adminPass)
	p, err := svc.Authenticate(ctx, pair.AccessToken)
	if err != nil || p.Role != "operator" {
		t.Fatalf("after demotion = %+v %v", p, err)
	}
	// Deleting a user ends its sessions and tokens.
	if err := svc.DeleteUser(ctx, admin.UserID); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Authenticate(ctx, pair.AccessToken)
	wantUnauthenticated(t, err)
	_, err = svc.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	wantCode(t, svc.DeleteUser(ctx, other.ID), "last_admin")
}

func TestUpdateMePasswordEndsSessions(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{})
	ctx := t.Context()
	pair := login(t, svc, adminEmail, adminPass)
	p, err := svc.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	name := "Root"
	_, err = svc.UpdateMe(ctx, *p, messages.UpdateMeRequest{CurrentPassword: "not-the-password-1", NewPassword: devPass})
	wantCode(t, err, "invalid_current_password")
	v, err := svc.UpdateMe(ctx, *p, messages.UpdateMeRequest{DisplayName: &name, CurrentPassword: adminPass, NewPassword: devPass})
	if err != nil || v.DisplayName != "Root" {
		t.Fatalf("update me = %+v %v", v, err)
	}
	_, err = svc.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	login(t, svc, adminEmail, devPass)
}

func TestBootstrapAdminOnce(t *testing.T) {
	svc, _ := startService(t, identity.Config{})
	ctx := t.Context()
	_, _, err := svc.BootstrapAdmin(ctx, "not an email", "")
	if messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("bad email = %v", err)
	}
	created, gen, err := svc.BootstrapAdmin(ctx, "root@example.com", "")
	if err != nil || !created || len(gen) != 24 {
		t.Fatalf("first bootstrap = %v %q %v", created, gen, err)
	}
	again, gen2, err := svc.BootstrapAdmin(ctx, "root@example.com", "")
	if err != nil || again || gen2 != "" {
		t.Fatalf("second bootstrap = %v %q %v", again, gen2, err)
	}
	login(t, svc, "root@example.com", gen)
	users, _, err := svc.ListUsers(ctx, store.Page{})
	if err != nil || len(users) != 1 || users[0].Role != "admin" {
		t.Fatalf("users = %+v %v", users, err)
	}
}

func TestAuditEntriesWritten(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{AuditFlush: 20 * time.Millisecond})
	ctx := t.Context()
	login(t, svc, adminEmail, adminPass)
	_, _ = svc.Login(ctx, messages.LoginRequest{Email: "ghost@example.com", Password: "x"}, "203.0.113.9")
	svc.Audit(messages.AuditEntry{Actor: "u1", Action: "POST /v1/vms", Result: "ok", RequestID: "r1"})
	var got []messages.AuditEntry
	if !testutil.Until(5*time.Second, 5*time.Millisecond, func() bool {
		got, _, _ = svc.ListAudit(ctx, store.Page{})
		return len(got) >= 4 // bootstrap, login ok, login failed, the explicit one
	}) {
		t.Fatalf("audit = %+v", got)
	}
	var failed bool
	for i, e := range got {
		if i > 0 && e.ID < got[i-1].ID {
			t.Fatal("audit not oldest first")
		}
		if e.Action == "auth.login" && e.Result == "failed" && e.Actor == "ghost@example.com" && e.Source == "203.0.113.9" {
			failed = true
		}
	}
	if !failed {
		t.Fatalf("no failed login entry in %+v", got)
	}
}

// TestTokenMadeWithTokenCannotOutliveIt: a principal acting through an API
// token gets child tokens capped at the parent's expiry, whatever TTL it asks.
func TestTokenMadeWithTokenCannotOutliveIt(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{})
	ctx := t.Context()
	dev, err := svc.CreateUser(ctx, messages.CreateUserRequest{Email: "ci@example.com", Role: "developer", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	user := messages.Principal{UserID: dev.ID, Email: dev.Email, Role: "developer"}
	parent, err := svc.CreateAPIToken(ctx, user, messages.CreateAPITokenRequest{Name: "short", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	viaToken, err := svc.Authenticate(ctx, parent.Token)
	if err != nil || viaToken.TokenID == "" {
		t.Fatalf("authenticate with the parent token: %+v %v", viaToken, err)
	}
	for _, ttl := range []string{"", "720h"} {
		child, err := svc.CreateAPIToken(ctx, *viaToken, messages.CreateAPITokenRequest{Name: "child", TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		if child.APIToken.ExpiresAt == nil || child.APIToken.ExpiresAt.After(*parent.APIToken.ExpiresAt) {
			t.Fatalf("child (ttl %q) expires %v, after its parent's %v", ttl, child.APIToken.ExpiresAt, parent.APIToken.ExpiresAt)
		}
	}
}

// TestAnonymousAuditIsBounded: requests without credentials cannot write the
// audit log without limit, while authenticated entries from the same source
// are still written.
func TestAnonymousAuditIsBounded(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{AuditFlush: 20 * time.Millisecond})
	for i := 0; i < 500; i++ {
		svc.Audit(messages.AuditEntry{Action: "GET /v1/vms", Result: "unauthenticated", Source: "192.0.2.7"})
	}
	svc.Audit(messages.AuditEntry{Actor: "u-1", Action: "POST /v1/vms", Result: "ok", Source: "192.0.2.7"})
	var anon, user int
	testutil.Until(10*time.Second, 20*time.Millisecond, func() bool {
		anon, user = 0, 0
		entries, _, err := svc.ListAudit(t.Context(), store.Page{Limit: store.MaxPageSize})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			switch e.Actor {
			case "anonymous":
				anon++
			case "u-1":
				user++
			}
		}
		return user != 0
	})
	if user != 1 {
		t.Fatalf("the authenticated entry was not written")
	}
	if anon == 0 || anon > 60 {
		t.Fatalf("%d anonymous entries written from one source, want 1..60", anon)
	}
}
