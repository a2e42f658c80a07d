//go:build etcd

package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// createUser has the admin create a user and checks the answer.
func (e *apiEnv) createUser(email, role, password string) *messages.UserView {
	e.t.Helper()
	u, err := e.admin.CreateUser(e.t.Context(), messages.CreateUserRequest{Email: email, Role: role, Password: password})
	if err != nil {
		e.t.Fatalf("create user %s: %v", email, err)
	}
	if u.ID == "" || u.Email != email || u.Role != role || u.Disabled {
		e.t.Fatalf("create user %s answered %+v", email, u)
	}
	return u
}

// listAllVMs walks every page of c's ListVMs.
func listAllVMs(t *testing.T, c *client.Client) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		vms, next, err := c.ListVMs(t.Context(), client.ListOptions{Limit: 100, Cursor: cursor})
		if err != nil {
			t.Fatalf("list vms: %v", err)
		}
		for _, vm := range vms {
			ids = append(ids, vm.ID)
		}
		if next == "" {
			return ids
		}
		cursor = next
	}
}

// listAllAudit walks every page of the audit log.
func listAllAudit(ctx context.Context, c *client.Client) ([]messages.AuditEntry, error) {
	var all []messages.AuditEntry
	cursor := ""
	for {
		page, next, err := c.ListAudit(ctx, client.ListOptions{Limit: 100, Cursor: cursor})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}

func TestE2EOwnershipAndRoles(t *testing.T) {
	env := startEnv(t)
	ctx := t.Context()
	devA := env.createUser("dev-a@example.com", string(security.RoleDeveloper), "developer-a-long-password-1")
	devB := env.createUser("dev-b@example.com", string(security.RoleDeveloper), "developer-b-long-password-2")
	viewer := env.createUser("viewer@example.com", string(security.RoleViewer), "viewer-long-password-3")
	a := env.login(devA.Email, "developer-a-long-password-1")
	b := env.login(devB.Email, "developer-b-long-password-2")
	v := env.login(viewer.Email, "viewer-long-password-3")
	for c, want := range map[*client.Client]*messages.UserView{a: devA, b: devB, v: viewer} {
		me, err := c.Me(ctx)
		if err != nil || me.ID != want.ID || me.Role != want.Role {
			t.Fatalf("me of %s: %+v %v", want.Email, me, err)
		}
	}

	created, err := a.CreateVM(ctx, vmRequest("a-vm"))
	if err != nil {
		t.Fatalf("developer A create: %v", err)
	}
	vmID := created.VM.ID
	if got, err := a.GetVM(ctx, "a-vm"); err != nil || got.ID != vmID {
		t.Fatalf("A gets its own vm by name: %+v %v", got, err)
	}

	// Another developer must not learn the VM exists: 404 by id and by name,
	// and it is not in their list.
	_, err = b.GetVM(ctx, vmID)
	wantCode(t, err, 404, "not_found")
	_, err = b.GetVM(ctx, "a-vm")
	wantCode(t, err, 404, "not_found")
	if ids := listAllVMs(t, b); slices.Contains(ids, vmID) {
		t.Fatalf("developer B lists A's vm: %v", ids)
	}
	if ids := listAllVMs(t, a); !slices.Equal(ids, []string{vmID}) {
		t.Fatalf("developer A lists %v, want [%s]", ids, vmID)
	}

	// The admin sees every VM.
	if got, err := env.admin.GetVM(ctx, vmID); err != nil || got.ID != vmID || got.Owner != devA.ID {
		t.Fatalf("admin get: %+v %v", got, err)
	}
	if ids := listAllVMs(t, env.admin); !slices.Contains(ids, vmID) {
		t.Fatalf("admin list %v misses %s", ids, vmID)
	}

	// A viewer never writes.
	_, err = v.CreateVM(ctx, vmRequest("viewer-vm"))
	wantCode(t, err, 403, "forbidden")
	if ids := listAllVMs(t, env.admin); len(ids) != 1 {
		t.Fatalf("vms after the viewer's refused create: %v", ids)
	}
}

func TestE2ERefreshRotationAndReuse(t *testing.T) {
	// No grace, so that the replay at once below is theft.
	env := startEnvWith(t, identity.Config{RefreshGrace: -1})
	ctx := t.Context()
	anon := env.client("")
	first := env.loginPair(adminEmail, adminPassword)
	second, err := anon.Refresh(ctx, first.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken || second.AccessToken == "" ||
		second.AccessToken == first.AccessToken || second.TokenType != "Bearer" {
		t.Fatalf("refresh did not rotate: first %+v second %+v", first, second)
	}
	if me, err := env.client(second.AccessToken).Me(ctx); err != nil || me.Email != adminEmail {
		t.Fatalf("new access token: %+v %v", me, err)
	}

	// Replaying the rotated-out token is taken as theft: refused, and the
	// whole family is revoked, so the legitimate newer token dies too.
	_, err = anon.Refresh(ctx, first.RefreshToken)
	wantCode(t, err, 401, "unauthenticated")
	_, err = anon.Refresh(ctx, second.RefreshToken)
	wantCode(t, err, 401, "unauthenticated")

	// A fresh login still works.
	env.loginPair(adminEmail, adminPassword)
}

func TestE2ELoginFailuresLookAlike(t *testing.T) {
	env := startEnv(t)
	ctx := t.Context()
	anon := env.client("")
	_, unknownErr := anon.Login(ctx, "nobody@example.com", adminPassword)
	_, wrongErr := anon.Login(ctx, adminEmail, "not-the-right-password-at-all-1")
	unknown, ok1 := unknownErr.(*client.APIError)
	wrong, ok2 := wrongErr.(*client.APIError)
	if !ok1 || !ok2 {
		t.Fatalf("login errors: unknown user %v, wrong password %v", unknownErr, wrongErr)
	}
	if unknown.Status != 401 || unknown.Status != wrong.Status || unknown.Code != wrong.Code ||
		unknown.Message != wrong.Message || unknown.Code == "" {
		t.Fatalf("unknown user answered %d %q %q; wrong password %d %q %q",
			unknown.Status, unknown.Code, unknown.Message, wrong.Status, wrong.Code, wrong.Message)
	}
	if len(unknown.Details) != 0 || len(wrong.Details) != 0 {
		t.Fatalf("login failures carry details: %v / %v", unknown.Details, wrong.Details)
	}
}

func TestE2EForgedTokens(t *testing.T) {
	env := startEnv(t)
	ctx := t.Context()
	me, err := env.admin.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	header, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": security.Issuer, "sub": me.ID, "role": string(security.RoleAdmin), "jti": "forged-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	none := b64(header) + "." + b64(claims) + "."
	_, _, err = env.client(none).ListVMs(ctx, client.ListOptions{})
	wantCode(t, err, 401, "unauthenticated")

	tok, err := env.admin.CreateAPIToken(ctx, messages.CreateAPITokenRequest{Name: "forgery-base"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, security.APITokenPrefix) {
		t.Fatalf("api token %q lacks the %s prefix", tok.Token, security.APITokenPrefix)
	}
	for _, bad := range []string{tok.Token[:len(tok.Token)-1], tok.Token[:len(tok.Token)/2], security.APITokenPrefix} {
		_, _, err = env.client(bad).ListVMs(ctx, client.ListOptions{})
		wantCode(t, err, 401, "unauthenticated")
	}
	// The untruncated token works, so the 401s above are about truncation.
	if _, _, err := env.client(tok.Token).ListVMs(ctx, client.ListOptions{}); err != nil {
		t.Fatalf("intact api token: %v", err)
	}
}

func TestE2EAPITokenRevocation(t *testing.T) {
	env := startEnv(t)
	ctx := t.Context()
	tok, err := env.admin.CreateAPIToken(ctx, messages.CreateAPITokenRequest{Name: "ci"})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	if tok.Token == "" || tok.APIToken.ID == "" || tok.APIToken.Name != "ci" || strings.Contains(fmt.Sprint(tok.APIToken), tok.Token) {
		t.Fatalf("created %+v", tok)
	}
	tc := env.client(tok.Token)
	if _, _, err := tc.ListVMs(ctx, client.ListOptions{}); err != nil {
		t.Fatalf("list with api token: %v", err)
	}
	if err := env.admin.RevokeAPIToken(ctx, tok.APIToken.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	// The gateway caches verified tokens for a few seconds (AuthCacheTTL).
	testutil.EventuallyReport(t, 20*time.Second, 50*time.Millisecond, "revoked api token refused", func() (bool, string) {
		_, _, err := tc.ListVMs(ctx, client.ListOptions{})
		var apiErr *client.APIError
		if e, ok := err.(*client.APIError); ok {
			apiErr = e
		}
		return apiErr != nil && apiErr.Status == 401 && apiErr.Code == "unauthenticated", fmt.Sprint(err)
	})
}

func TestE2EAudit(t *testing.T) {
	env := startEnv(t)
	ctx := t.Context()
	env.createUser("dev@example.com", string(security.RoleDeveloper), "developer-a-long-password-1")
	dev := env.login("dev@example.com", "developer-a-long-password-1")
	if _, err := env.client("").Login(ctx, "dev@example.com", "wrong-password-for-the-dev-1"); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	// Entries are written in batches; wait for the failed login to land.
	var entries []messages.AuditEntry
	testutil.EventuallyReport(t, 15*time.Second, 50*time.Millisecond, "failed login in the audit log", func() (bool, string) {
		var err error
		entries, err = listAllAudit(ctx, env.admin)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range entries {
			if e.Action == "auth.login" && e.Result == "failed" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d entries, none a failed login: %+v", len(entries), entries)
	})
	for _, e := range entries {
		if e.ID == "" || e.Time.IsZero() || e.Actor == "" || e.Action == "" || e.Result == "" {
			t.Errorf("incomplete audit entry %+v", e)
		}
		for _, secret := range []string{adminPassword, "developer-a-long-password-1", "wrong-password-for-the-dev-1"} {
			if strings.Contains(fmt.Sprint(e), secret) {
				t.Errorf("audit entry holds a password: %+v", e)
			}
		}
	}
	_, _, err := dev.ListAudit(ctx, client.ListOptions{})
	wantCode(t, err, 403, "forbidden")
}

// rawGet answers GET url with a bearer token: status and body bytes.
func (e *apiEnv) rawGet(path, token string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestE2EOutOfScopeAuditedAsDenied: developer B reading A's VM by id or name
// gets exactly the answer of a VM that does not exist, and each attempt is in
// the audit log as denied (a truly missing VM is not a denial).
func TestE2EOutOfScopeAuditedAsDenied(t *testing.T) {
	env := startEnv(t)
	ctx := t.Context()
	env.createUser("dev-a@example.com", string(security.RoleDeveloper), "developer-a-long-password-1")
	devB := env.createUser("dev-b@example.com", string(security.RoleDeveloper), "developer-b-long-password-2")
	a := env.login("dev-a@example.com", "developer-a-long-password-1")
	bToken := env.loginPair(devB.Email, "developer-b-long-password-2").AccessToken
	created, err := a.CreateVM(ctx, vmRequest("a-vm"))
	if err != nil {
		t.Fatal(err)
	}
	vmID, missingID := created.VM.ID, messages.NewID()
	for _, refs := range [][2]string{{vmID, missingID}, {"a-vm", "no-such-vm"}} {
		hiddenStatus, hidden := env.rawGet("/v1/vms/"+refs[0], bToken)
		missingStatus, missing := env.rawGet("/v1/vms/"+refs[1], bToken)
		if hiddenStatus != http.StatusNotFound || missingStatus != http.StatusNotFound {
			t.Fatalf("statuses hidden %d, missing %d; want 404", hiddenStatus, missingStatus)
		}
		if got, want := strings.ReplaceAll(string(hidden), refs[0], "REF"), strings.ReplaceAll(string(missing), refs[1], "REF"); got != want {
			t.Fatalf("another owner's vm answers\n%s\na missing vm answers\n%s", hidden, missing)
		}
	}
	testutil.EventuallyReport(t, 15*time.Second, 50*time.Millisecond, "out-of-scope reads audited as denied", func() (bool, string) {
		entries, err := listAllAudit(ctx, env.admin)
		if err != nil {
			return false, err.Error()
		}
		var byID, byName bool
		for _, e := range entries {
			if e.Actor != devB.ID || e.Action != "GET /v1/vms/:id" {
				continue
			}
			switch e.Target {
			case vmID:
				byID = e.Result == "denied"
			case "a-vm":
				byName = e.Result == "denied"
			case missingID, "no-such-vm":
				t.Fatalf("a missing vm was audited: %+v", e)
			}
		}
		return byID && byName, fmt.Sprintf("by id %v, by name %v: %+v", byID, byName, entries)
	})
}
