//go:build etcd

package gateway_test

import (
	"encoding/base64"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

const (
	adminEmail = "Admin@Example.com"
	adminPass  = "plum-otter-lantern-93"
	devPass    = "quiet-violet-harbor-17"
)

// startIdentity runs a gateway with a bootstrapped admin.
func startIdentity(t *testing.T, idc gateway.IdentityConfig) (*gateway.Gateway, *store.Store) {
	t.Helper()
	cfg := fastJobs()
	cfg.Identity = idc
	g, st := startGateway(t, cfg)
	created, gen, err := g.BootstrapAdmin(t.Context(), adminEmail, adminPass)
	if err != nil || !created || gen != "" {
		t.Fatalf("bootstrap admin = %v %q %v", created, gen, err)
	}
	return g, st
}

func login(t *testing.T, g *gateway.Gateway, email, pw string) *messages.TokenPair {
	t.Helper()
	pair, err := g.Login(t.Context(), messages.LoginRequest{Email: email, Password: pw}, "192.0.2.1")
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
	g, _ := startIdentity(t, gateway.IdentityConfig{RefreshGrace: -1})
	ctx := t.Context()
	pair := login(t, g, "admin@example.com", adminPass)
	p, err := g.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Email != "admin@example.com" || p.Role != "admin" || p.TokenID != "" || p.UserID == "" {
		t.Fatalf("principal %+v", p)
	}
	second, err := g.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if second.RefreshToken == pair.RefreshToken {
		t.Fatal("refresh did not rotate")
	}
	if _, err := g.Authenticate(ctx, second.AccessToken); err != nil {
		t.Fatalf("refreshed access token: %v", err)
	}
	// Replaying the rotated-out token is theft: the family is revoked...
	_, err = g.Refresh(ctx, pair.RefreshToken, "198.51.100.7")
	wantUnauthenticated(t, err)
	// ...so the newest token, held by the legitimate client, fails too.
	_, err = g.Refresh(ctx, second.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)

	// Garbage and logout.
	_, err = g.Refresh(ctx, "otr_nope", "192.0.2.1")
	wantUnauthenticated(t, err)
	third := login(t, g, adminEmail, adminPass)
	wantUnauthenticated(t, g.Logout(ctx, "junk"))
	if err := g.Logout(ctx, third.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, err = g.Refresh(ctx, third.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	// A well-formed token of an unknown family logs out quietly.
	tok, _, _ := security.NewRefreshToken()
	if err := g.Logout(ctx, tok); err != nil {
		t.Fatalf("logout unknown family: %v", err)
	}
}

func TestLoginFailuresLookAlike(t *testing.T) {
	g, _ := startIdentity(t, gateway.IdentityConfig{})
	_, errUnknown := g.Login(t.Context(), messages.LoginRequest{Email: "nobody@example.com", Password: adminPass}, "192.0.2.1")
	_, errWrong := g.Login(t.Context(), messages.LoginRequest{Email: adminEmail, Password: "wrong-password-123"}, "192.0.2.2")
	a, b := wantCode(t, errUnknown, "invalid_credentials"), wantCode(t, errWrong, "invalid_credentials")
	if a.Message != b.Message || a.Kind != b.Kind {
		t.Fatalf("unknown user %+v vs wrong password %+v", a, b)
	}
}

func TestLoginRateLimits(t *testing.T) {
	g, _ := startIdentity(t, gateway.IdentityConfig{LoginPerSource: 3, LoginPerAccount: 2})
	ctx := t.Context()
	try := func(email, source string) error {
		_, err := g.Login(ctx, messages.LoginRequest{Email: email, Password: "wrong-password-123"}, source)
		return err
	}
	// Per account and source: two attempts from one source (the email
	// normalised), then refused there, even with the right password; another
	// source is not affected.
	wantCode(t, try(adminEmail, "10.0.0.1"), "invalid_credentials")
	wantCode(t, try(strings.ToUpper(adminEmail), "10.0.0.1"), "invalid_credentials")
	_, err := g.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: adminPass}, "10.0.0.1")
	wantCode(t, err, "rate_limited")
	if _, err := g.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: adminPass}, "10.0.0.3"); err != nil {
		t.Fatalf("right password from another source: %v", err)
	}
	// Per source: three attempts at different accounts, then refused.
	for _, e := range []string{"a@x.io", "b@x.io", "c@x.io"} {
		wantCode(t, try(e, "10.9.9.9"), "invalid_credentials")
	}
	wantCode(t, try("d@x.io", "10.9.9.9"), "rate_limited")
}

func TestAuthenticateRejectsBadJWTs(t *testing.T) {
	g, st := startIdentity(t, gateway.IdentityConfig{})
	ctx := t.Context()
	pair := login(t, g, adminEmail, adminPass)
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
	p, _ := g.Authenticate(ctx, pair.AccessToken)
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
			_, err := g.Authenticate(ctx, tok)
			wantUnauthenticated(t, err)
		})
	}
}

func TestAPITokenLifecycle(t *testing.T) {
	g, st := startIdentity(t, gateway.IdentityConfig{AuthCacheTTL: 300 * time.Millisecond})
	ctx := t.Context()
	dev, err := g.CreateUser(ctx, messages.CreateUserRequest{Email: "Dev@Example.com", Role: "developer", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Email != "dev@example.com" {
		t.Fatalf("email stored as %q", dev.Email)
	}
	_, err = g.CreateUser(ctx, messages.CreateUserRequest{Email: "dev@example.com", Role: "viewer", Password: devPass})
	wantCode(t, err, "user_email_conflict")
	_, err = g.CreateUser(ctx, messages.CreateUserRequest{Email: "x@example.com", Role: "root", Password: devPass})
	wantCode(t, err, "invalid_role")
	_, err = g.CreateUser(ctx, messages.CreateUserRequest{Email: "x@example.com", Role: "viewer", Password: "short"})
	wantCode(t, err, "password_too_short")

	p := messages.Principal{UserID: dev.ID, Email: dev.Email, Role: "developer"}
	_, err = g.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", Role: "admin"})
	wantCode(t, err, "role_exceeds_caller")
	_, err = g.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", TTL: "forever"})
	wantCode(t, err, "invalid_ttl")
	_, err = g.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", TTL: "9000h"})
	wantCode(t, err, "invalid_ttl")

	created, err := g.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci", Role: "viewer", TTL: "720h"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Token, "otx_") || created.APIToken.Role != "viewer" || created.APIToken.ExpiresAt == nil {
		t.Fatalf("created %+v", created)
	}
	got, err := g.Authenticate(ctx, created.Token)
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != dev.ID || got.Role != "viewer" || got.TokenID != created.APIToken.ID {
		t.Fatalf("principal %+v", got)
	}
	// A wrong secret under a real id fails.
	wrong := created.Token[:len(created.Token)-1] + map[bool]string{true: "A", false: "B"}[!strings.HasSuffix(created.Token, "A")]
	_, err = g.Authenticate(ctx, wrong)
	wantUnauthenticated(t, err)

	// Lists: the owner's and everyone's; another owner's revoke is not found.
	mine, _, err := g.ListAPITokens(ctx, dev.ID, store.Page{})
	if err != nil || len(mine) != 1 {
		t.Fatalf("list mine = %v %v", mine, err)
	}
	if err := g.RevokeAPIToken(ctx, "someone-else", created.APIToken.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("revoke by another owner = %v, want not found", err)
	}

	// A second replica caches the token; revoking on the first stops it
	// there within the cache TTL.
	cfg := fastJobs()
	cfg.NoDispatch, cfg.Replica = true, "replica-2"
	cfg.Identity.AuthCacheTTL = 300 * time.Millisecond
	g2, err := gateway.Start(ctx, st, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if _, err := g2.Authenticate(ctx, created.Token); err != nil {
		t.Fatal(err)
	}
	if err := g.RevokeAPIToken(ctx, dev.ID, created.APIToken.ID); err != nil {
		t.Fatal(err)
	}
	_, err = g.Authenticate(ctx, created.Token)
	wantUnauthenticated(t, err) // at once on the replica that revoked
	if !testutil.Until(3*time.Second, 5*time.Millisecond, func() bool {
		_, err := g2.Authenticate(ctx, created.Token)
		return err != nil
	}) {
		t.Fatal("revoked token still works on the second replica after 3s")
	}
}

func TestLastAdminAndDelete(t *testing.T) {
	g, _ := startIdentity(t, gateway.IdentityConfig{})
	ctx := t.Context()
	admin, err := g.Authenticate(ctx, login(t, g, adminEmail, adminPass).AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.SetRole(ctx, admin.UserID, "viewer")
	wantCode(t, err, "last_admin")
	wantCode(t, g.DeleteUser(ctx, admin.UserID), "last_admin")
	_, err = g.SetRole(ctx, admin.UserID, "superuser")
	wantCode(t, err, "invalid_role")

	other, err := g.CreateUser(ctx, messages.CreateUserRequest{Email: "second@example.com", Role: "admin", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	v, err := g.SetRole(ctx, admin.UserID, "operator")
	if err != nil || v.Role != "operator" {
		t.Fatalf("demote with a second admin = %+v %v", v, err)
	}
	// The demoted admin's JWT now acts as operator (user cache dropped at once).
	pair := login(t, g, adminEmail, adminPass)
	p, err := g.Authenticate(ctx, pair.AccessToken)
	if err != nil || p.Role != "operator" {
		t.Fatalf("after demotion = %+v %v", p, err)
	}
	// Deleting a user ends its sessions and tokens.
	if err := g.DeleteUser(ctx, admin.UserID); err != nil {
		t.Fatal(err)
	}
	_, err = g.Authenticate(ctx, pair.AccessToken)
	wantUnauthenticated(t, err)
	_, err = g.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	wantCode(t, g.DeleteUser(ctx, other.ID), "last_admin")
}

func TestUpdateMePasswordEndsSessions(t *testing.T) {
	g, _ := startIdentity(t, gateway.IdentityConfig{})
	ctx := t.Context()
	pair := login(t, g, adminEmail, adminPass)
	p, err := g.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	name := "Root"
	_, err = g.UpdateMe(ctx, *p, messages.UpdateMeRequest{CurrentPassword: "not-the-password-1", NewPassword: devPass})
	wantCode(t, err, "invalid_current_password")
	v, err := g.UpdateMe(ctx, *p, messages.UpdateMeRequest{DisplayName: &name, CurrentPassword: adminPass, NewPassword: devPass})
	if err != nil || v.DisplayName != "Root" {
		t.Fatalf("update me = %+v %v", v, err)
	}
	_, err = g.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	login(t, g, adminEmail, devPass)
}

func TestBootstrapAdminOnce(t *testing.T) {
	g, _ := startGateway(t, fastJobs())
	ctx := t.Context()
	_, _, err := g.BootstrapAdmin(ctx, "not an email", "")
	if messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("bad email = %v", err)
	}
	created, gen, err := g.BootstrapAdmin(ctx, "root@example.com", "")
	if err != nil || !created || len(gen) != 24 {
		t.Fatalf("first bootstrap = %v %q %v", created, gen, err)
	}
	again, gen2, err := g.BootstrapAdmin(ctx, "root@example.com", "")
	if err != nil || again || gen2 != "" {
		t.Fatalf("second bootstrap = %v %q %v", again, gen2, err)
	}
	login(t, g, "root@example.com", gen)
	users, _, err := g.ListUsers(ctx, store.Page{})
	if err != nil || len(users) != 1 || users[0].Role != "admin" {
		t.Fatalf("users = %+v %v", users, err)
	}
}

func TestAuditEntriesWritten(t *testing.T) {
	g, _ := startIdentity(t, gateway.IdentityConfig{AuditFlush: 20 * time.Millisecond})
	ctx := t.Context()
	login(t, g, adminEmail, adminPass)
	_, _ = g.Login(ctx, messages.LoginRequest{Email: "ghost@example.com", Password: "x"}, "203.0.113.9")
	g.Audit(messages.AuditEntry{Actor: "u1", Action: "POST /v1/vms", Result: "ok", RequestID: "r1"})
	var got []messages.AuditEntry
	if !testutil.Until(5*time.Second, 5*time.Millisecond, func() bool {
		got, _, _ = g.ListAudit(ctx, store.Page{})
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

func TestOwnerScoping(t *testing.T) {
	g, _ := startGateway(t, slowJobs())
	ctx := t.Context()
	vm, task := createVM(t, g, "web") // owned by alice
	if _, err := g.GetVM(ctx, "bob", vm.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob gets alice's vm by id: %v", err)
	}
	if _, err := g.GetVM(ctx, "bob", "web"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob gets alice's vm by name: %v", err)
	}
	for _, ref := range []string{vm.ID, "web"} {
		if got, err := g.GetVM(ctx, "", ref); err != nil || got.ID != vm.ID {
			t.Fatalf("any-owner get %s = %v %v", ref, got, err)
		}
	}
	if _, err := g.GetTask(ctx, "bob", task.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob gets alice's task: %v", err)
	}
	if _, err := g.GetTask(ctx, "", task.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.VMTask(ctx, "bob", vm.ID, messages.TaskVMDelete, false); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob deletes alice's vm: %v", err)
	}
	bobs, _, err := g.ListVMs(ctx, "bob", store.Page{})
	if err != nil || len(bobs) != 0 {
		t.Fatalf("bob's list = %v %v", bobs, err)
	}
	all, _, err := g.ListVMs(ctx, "", store.Page{})
	if err != nil || len(all) != 1 {
		t.Fatalf("all = %v %v", all, err)
	}
	tasks, _, err := g.ListTasks(ctx, "", store.Page{})
	if err != nil || len(tasks) != 1 {
		t.Fatalf("all tasks = %v %v", tasks, err)
	}
	// Two owners with the same name: ambiguous for the any-owner scope.
	if _, _, err := g.CreateVM(ctx, "bob", messages.CreateVMRequest{Name: "web",
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = g.GetVM(ctx, "", "web")
	wantCode(t, err, "ambiguous_vm_name")
	if _, _, err := g.CreateVM(ctx, "", messages.CreateVMRequest{Name: "x"}); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("create without owner = %v", err)
	}
}

// TestTokenMadeWithTokenCannotOutliveIt: a principal acting through an API
// token gets child tokens capped at the parent's expiry, whatever TTL it asks.
func TestTokenMadeWithTokenCannotOutliveIt(t *testing.T) {
	g, _ := startIdentity(t, gateway.IdentityConfig{})
	ctx := t.Context()
	dev, err := g.CreateUser(ctx, messages.CreateUserRequest{Email: "ci@example.com", Role: "developer", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	user := messages.Principal{UserID: dev.ID, Email: dev.Email, Role: "developer"}
	parent, err := g.CreateAPIToken(ctx, user, messages.CreateAPITokenRequest{Name: "short", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	viaToken, err := g.Authenticate(ctx, parent.Token)
	if err != nil || viaToken.TokenID == "" {
		t.Fatalf("authenticate with the parent token: %+v %v", viaToken, err)
	}
	for _, ttl := range []string{"", "720h"} {
		child, err := g.CreateAPIToken(ctx, *viaToken, messages.CreateAPITokenRequest{Name: "child", TTL: ttl})
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
	g, _ := startIdentity(t, gateway.IdentityConfig{AuditFlush: 20 * time.Millisecond})
	for i := 0; i < 500; i++ {
		g.Audit(messages.AuditEntry{Action: "GET /v1/vms", Result: "unauthenticated", Source: "192.0.2.7"})
	}
	g.Audit(messages.AuditEntry{Actor: "u-1", Action: "POST /v1/vms", Result: "ok", Source: "192.0.2.7"})
	var anon, user int
	testutil.Until(10*time.Second, 20*time.Millisecond, func() bool {
		anon, user = 0, 0
		entries, _, err := g.ListAudit(t.Context(), store.Page{Limit: store.MaxPageSize})
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
