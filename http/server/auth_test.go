package server

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/otherix/otherix/security"
)

// publicRoutes are the only routes answered without a token.
var publicRoutes = []string{
	"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.yaml",
	"POST /v1/auth/login", "POST /v1/auth/refresh", "POST /v1/auth/logout",
	"GET /v1/ca",
	// Anonymous callers get the version; a token sent must be valid.
	"GET /v1/version",
	"GET /ui/vms/:name/console", "GET /ui/assets/*path", "GET /ui", "GET /ui/",
	// Its credential is the single-use token in the query (console.go).
	"GET /v1/vms/:id/console/ws",
}

var pathParam = regexp.MustCompile(`:[A-Za-z_]+`)

// concrete fills a route template's parameters with an id nobody owns.
func concrete(path string) string { return pathParam.ReplaceAllString(path, "someone-else") }

// TestRouteMatrix walks every route of the router for every role and checks
// the answer against security's matrix, so a route without a rule, or a rule
// the middleware does not apply, fails here.
func TestRouteMatrix(t *testing.T) {
	s, _, _ := newTestServer(t, Config{MetricsEnabled: true, MetricsPublic: true})
	matrix := security.Matrix()
	for _, ri := range s.Routes() {
		key := routeKey(ri.Method, ri.Path)
		r, ok := s.table[key]
		if !ok {
			t.Errorf("%s is routed but not in the route table", key)
			continue
		}
		if r.access == accessRBAC {
			if _, ok := matrix[security.RoleAdmin][r.resource][r.verb]; !ok {
				t.Errorf("%s needs %s/%s, which the matrix has no rule for", key, r.resource, r.verb)
				continue
			}
		}
		for _, role := range security.Roles() {
			t.Run(key+" as "+string(role), func(t *testing.T) {
				rec := req{method: ri.Method, path: concrete(ri.Path), body: "{}",
					header: map[string]string{"Authorization": "Bearer " + tokenFor(role)}}.do(t, s)
				if r.access == accessPublic {
					return // answered on the body's credentials, not the caller's role
				}
				if r.access != accessRBAC {
					if rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden {
						t.Fatalf("status %d for a route open to every principal: %s", rec.Code, rec.Body)
					}
					return
				}
				switch scope := security.Allowed(role, r.resource, r.verb); {
				case scope == security.ScopeNone && r.hideDenied:
					wantError(t, rec, http.StatusNotFound, "not_found")
				case scope == security.ScopeNone:
					wantError(t, rec, http.StatusForbidden, "forbidden")
				case rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden:
					t.Fatalf("scope %s but status %d: %s", scope, rec.Code, rec.Body)
				}
			})
		}
	}
	if len(s.table) != len(s.Routes()) {
		t.Errorf("route table has %d rows, router %d routes", len(s.table), len(s.Routes()))
	}
}

// TestEveryRouteNeedsAToken: without a token (or with a bad one) every
// route but the public ones answers 401 with a Bearer challenge.
func TestEveryRouteNeedsAToken(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{MetricsEnabled: true, MetricsPublic: true})
	for _, ri := range s.Routes() {
		key := routeKey(ri.Method, ri.Path)
		for _, auth := range []string{"", "Bearer nope", "Basic dXNlcjpwYXNz", "Bearer", "Bearer a b"} {
			rec := req{method: ri.Method, path: concrete(ri.Path), body: `{}`,
				header: map[string]string{"Authorization": auth}}.do(t, s)
			if slices.Contains(publicRoutes, key) {
				if rec.Code == http.StatusUnauthorized && !strings.HasPrefix(key, "POST /v1/auth/") && key != "GET /v1/vms/:id/console/ws" &&
					(key != "GET /v1/version" || auth == "") {
					t.Errorf("%s (public) answered 401", key)
				}
				continue
			}
			wantError(t, rec, http.StatusUnauthorized, "unauthenticated")
			if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q", key, got)
			}
		}
	}
	if cp.creates != 0 {
		t.Errorf("%d VMs created without a token", cp.creates)
	}

	private, _, _ := newTestServer(t, Config{MetricsEnabled: true})
	wantError(t, req{method: "GET", path: "/metrics", header: map[string]string{"Authorization": ""}}.do(t, private), 401, "unauthenticated")
	if rec := (req{method: "GET", path: "/metrics"}).do(t, private); rec.Code != http.StatusOK {
		t.Errorf("/metrics with a token: %d", rec.Code)
	}
}

// TestScopeReachesControlPlane: own scope passes the caller's id as owner,
// any scope passes "", and creates are always owned by the caller.
func TestScopeReachesControlPlane(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	for role, wantOwner := range map[security.Role]string{security.RoleAdmin: "u-admin", security.RoleDeveloper: "u-developer"} {
		rec := req{method: "POST", path: "/v1/vms", body: createBody,
			header: map[string]string{"Authorization": "Bearer " + tokenFor(role)}}.do(t, s)
		if rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), `"owner":"`+wantOwner+`"`) {
			t.Errorf("%s create: %d %s", role, rec.Code, rec.Body)
		}
	}
	for role, wantOwner := range map[security.Role]string{security.RoleAdmin: `"owner":""`, security.RoleViewer: `"owner":"u-viewer"`} {
		rec := req{method: "GET", path: "/v1/vms/web-1",
			header: map[string]string{"Authorization": "Bearer " + tokenFor(role)}}.do(t, s)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), wantOwner) {
			t.Errorf("%s get: %d %s", role, rec.Code, rec.Body)
		}
	}
	// Own scope on users: oneself only, everyone else is not found.
	dev := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleDeveloper)}
	if rec := (req{method: "GET", path: "/v1/users/u-developer", header: dev}).do(t, s); rec.Code != http.StatusOK {
		t.Errorf("own user: %d %s", rec.Code, rec.Body)
	}
	wantError(t, req{method: "GET", path: "/v1/users/u-admin", header: dev}.do(t, s), 404, "not_found")
	wantError(t, req{method: "PUT", path: "/v1/users/u-developer/role", body: `{"role":"admin"}`, header: dev}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "GET", path: "/v1/tokens?all=true", header: dev}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "POST", path: "/v1/tokens", body: `{"name":"ci","role":"admin"}`, header: dev}.do(t, s), 403, "forbidden")
}

// TestAuditAndSecrets: denials and writes are audited, reads are not, and
// no password or token reaches the log.
func TestAuditAndSecrets(t *testing.T) {
	s, cp, logs := newTestServer(t, Config{})
	viewer := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleViewer)}
	wantError(t, req{method: "POST", path: "/v1/vms", body: createBody, header: viewer}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "GET", path: "/v1/audit", header: viewer}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "GET", path: "/v1/vms", header: map[string]string{"Authorization": "Bearer secret-token-xyz"}}.do(t, s), 401, "unauthenticated")
	req{method: "GET", path: "/v1/vms"}.do(t, s)
	req{method: "DELETE", path: "/v1/vms/web-1"}.do(t, s)
	login := req{method: "POST", path: "/v1/auth/login", body: `{"email":"a@example.com","password":"wrong-password-hunter2"}`,
		header: map[string]string{"Authorization": ""}}.do(t, s)
	wantError(t, login, 401, "invalid_credentials")
	ok := req{method: "POST", path: "/v1/auth/login", body: `{"email":"a@example.com","password":"correct-horse-battery-staple-9"}`,
		header: map[string]string{"Authorization": "", HeaderIdempotencyKey: "k"}}.do(t, s)
	if ok.Code != http.StatusOK || ok.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("login: %d %v %s", ok.Code, ok.Header(), ok.Body)
	}
	if n := cp.idem.len(); n != 0 {
		t.Errorf("login stored %d idempotency records; its body holds a password", n)
	}
	admin := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleAdmin), HeaderIdempotencyKey: "k2"}
	req{method: "POST", path: "/v1/tokens", body: `{"name":"ci"}`, header: admin}.do(t, s)
	req{method: "POST", path: "/v1/users", body: `{"email":"b@example.com","role":"viewer","password":"another-long-password-7"}`, header: admin}.do(t, s)
	req{method: "PATCH", path: "/v1/users/me", body: `{"current_password":"correct-horse-battery-staple-9","new_password":"a-new-long-password-8"}`, header: admin}.do(t, s)
	if n := cp.idem.len(); n != 0 {
		t.Errorf("routes carrying passwords or tokens stored %d idempotency records", n)
	}
	want := []string{
		"u-viewer POST /v1/vms forbidden",
		"u-viewer GET /v1/audit forbidden",
		"anonymous GET /v1/vms unauthenticated",
		"u-admin DELETE /v1/vms/:id ok",
		"anonymous POST /v1/auth/login invalid_credentials",
		"anonymous POST /v1/auth/login ok",
		"u-admin POST /v1/tokens ok",
		"u-admin POST /v1/users ok",
		"u-admin PATCH /v1/users/me ok",
	}
	var got []string
	for _, e := range cp.auditLog() {
		got = append(got, e.Actor+" "+e.Action+" "+e.Result)
		if e.RequestID == "" || e.Source == "" || e.Time.IsZero() {
			t.Errorf("entry lacks request id, source or time: %+v", e)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit:\n got %q\nwant %q", got, want)
	}
	if e := cp.auditLog()[3]; e.Target != "web-1" {
		t.Errorf("target %q", e.Target)
	}
	for _, secret := range []string{"hunter2", "correct-horse", "secret-token-xyz", tokenFor(security.RoleViewer), "r-1",
		"another-long-password-7", "a-new-long-password-8"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds %q:\n%s", secret, logs)
		}
	}
}
