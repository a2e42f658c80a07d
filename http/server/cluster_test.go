package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/otherix/otherix/security"
)

// TestClusterRoutes: replica join tokens and the member list are admin
// only, the created token is not kept for idempotency replays.
func TestClusterRoutes(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	rec := req{method: "POST", path: "/v1/cluster/join-tokens", body: `{"kind":"replica","ttl":"30m"}`,
		header: map[string]string{HeaderIdempotencyKey: "k1"}}.do(t, s)
	if rec.Code != http.StatusCreated || rec.Header().Get("Cache-Control") != "no-store" || !strings.Contains(rec.Body.String(), `"kind":"replica"`) {
		t.Fatalf("create replica token: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if n := cp.idem.len(); n != 0 {
		t.Errorf("replica token create stored %d idempotency records", n)
	}
	wantError(t, req{method: "POST", path: "/v1/cluster/join-tokens", body: `{"kind":"node"}`}.do(t, s), 400, "invalid_field")
	rec = req{method: "GET", path: "/v1/cluster/members"}.do(t, s)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"role":"voter"`) {
		t.Fatalf("members: %d %s", rec.Code, rec.Body)
	}
	op := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleOperator)}
	wantError(t, req{method: "GET", path: "/v1/cluster/members", header: op}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "POST", path: "/v1/cluster/join-tokens", body: `{"kind":"replica"}`, header: op}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "DELETE", path: "/v1/cluster/members/r3", header: op}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "DELETE", path: "/v1/cluster/members/r2"}.do(t, s), 409, "quorum_at_risk")
	wantError(t, req{method: "DELETE", path: "/v1/cluster/members/r2?force=maybe"}.do(t, s), 400, "invalid_force")
	wantError(t, req{method: "DELETE", path: "/v1/cluster/members/nope"}.do(t, s), 404, "not_found")
	rec = req{method: "DELETE", path: "/v1/cluster/members/r2?force=true"}.do(t, s)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"member":{"name":"r2"`) {
		t.Fatalf("forced remove: %d %s", rec.Code, rec.Body)
	}
}

// TestNotServing: a learner answers liveness, and 503 not_ready with its
// reason everywhere else.
func TestNotServing(t *testing.T) {
	h := NotServing("learner", "waiting")
	for path, code := range map[string]int{"/healthz": 200, "/readyz": 503, "/v1/vms": 503} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != code {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		if code == 503 {
			if !strings.Contains(rec.Body.String(), `"reason":"learner"`) {
				t.Fatalf("%s: %s", path, rec.Body)
			}
			wantError(t, rec, 503, "not_ready")
		}
	}
}

// TestClusterEndpoints: every authenticated role learns the replicas' API
// URLs (so every client can fail over); an anonymous caller does not.
func TestClusterEndpoints(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	for _, role := range []security.Role{security.RoleViewer, security.RoleDeveloper, security.RoleOperator, security.RoleAdmin} {
		rec := req{method: "GET", path: "/v1/cluster/endpoints", header: map[string]string{"Authorization": "Bearer " + tokenFor(role)}}.do(t, s)
		if rec.Code != http.StatusOK || rec.Body.String() != `{"api_urls":["https://r1.example:7080","https://r2.example:7080"]}` {
			t.Fatalf("%s: %d %s", role, rec.Code, rec.Body)
		}
	}
	wantError(t, req{method: "GET", path: "/v1/cluster/endpoints", header: map[string]string{"Authorization": ""}}.do(t, s), 401, "unauthenticated")
}
