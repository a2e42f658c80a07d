package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/otherix/otherix/security"
)

// TestDebugProfile: an admin reads this replica's goroutine dump and heap
// profile; every other role gets 404 (as for anything it may not see),
// an unknown profile 404 unknown_profile, a CPU profile of 0 seconds 400.
func TestDebugProfile(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, _ := newContractClient(t, ts.URL)
	get := func(role security.Role, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokenFor(role))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(security.RoleAdmin, "/v1/debug/pprof/goroutine?debug=2"); code != 200 || !strings.Contains(body, "goroutine ") ||
		!strings.Contains(body, "server.TestDebugProfile") {
		t.Fatalf("admin goroutine dump: %d %.300q", code, body)
	}
	if code, body := get(security.RoleAdmin, "/v1/debug/pprof/heap"); code != 200 || len(body) == 0 {
		t.Fatalf("admin heap profile: %d, %d bytes", code, len(body))
	}
	for _, role := range []security.Role{security.RoleOperator, security.RoleDeveloper, security.RoleViewer} {
		if code, body := get(role, "/v1/debug/pprof/goroutine?debug=2"); code != 404 || strings.Contains(body, "goroutine ") {
			t.Fatalf("%s: %d %.200q, want 404 without a dump", role, code, body)
		}
	}
	if code, body := get(security.RoleAdmin, "/v1/debug/pprof/nonsense"); code != 404 || !strings.Contains(body, `"unknown_profile"`) {
		t.Fatalf("unknown profile: %d %s", code, body)
	}
	if code, body := get(security.RoleAdmin, "/v1/debug/pprof/profile?seconds=0"); code != 400 || !strings.Contains(body, `"seconds"`) {
		t.Fatalf("cpu profile of 0 s: %d %s", code, body)
	}
}
