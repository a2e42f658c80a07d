package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/otherix/otherix/security"
)

// TestQuorumGate: without quorum every route that needs the store answers
// 503 no_quorum before authentication, and the routes that need none keep
// answering; /readyz is 503 not_ready naming the reason. With quorum back
// the same requests go through.
func TestQuorumGate(t *testing.T) {
	var has atomic.Bool
	s, _, _ := newTestServer(t, Config{MetricsEnabled: true, MetricsPublic: true, HasQuorum: has.Load})
	admin := "Bearer " + tokenFor(security.RoleAdmin)
	do := func(method, path, auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(`{}`))
		r.Header.Set("Content-Type", "application/json")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		return w
	}
	refused := []struct{ method, path, auth string }{
		{"POST", "/v1/vms", admin}, {"GET", "/v1/vms", admin}, {"GET", "/v1/vms/web-1", admin},
		{"GET", "/v1/nodes", admin}, {"GET", "/v1/tasks/x", ""}, {"POST", "/v1/auth/login", ""},
		{"GET", "/v1/watch", admin},
	}
	for _, c := range refused {
		w := do(c.method, c.path, c.auth)
		var env struct{ Error struct{ Code string } }
		_ = json.Unmarshal(w.Body.Bytes(), &env)
		if w.Code != http.StatusServiceUnavailable || env.Error.Code != "no_quorum" || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s without quorum: %d %s (Retry-After %q); want 503 no_quorum", c.method, c.path, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
	}
	for _, path := range []string{"/healthz", "/openapi.yaml", "/v1/ca", "/v1/version", "/metrics"} {
		if w := do("GET", path, ""); w.Code != http.StatusOK {
			t.Errorf("GET %s without quorum: %d %s", path, w.Code, w.Body)
		}
	}
	if w := do("GET", "/no/such/route", ""); w.Code != http.StatusNotFound {
		t.Errorf("unknown route without quorum: %d", w.Code)
	}
	w := do("GET", "/readyz", "")
	var ready struct {
		Error struct {
			Code    string
			Details struct{ Reason string }
		}
	}
	_ = json.Unmarshal(w.Body.Bytes(), &ready)
	if w.Code != http.StatusServiceUnavailable || ready.Error.Code != "not_ready" || ready.Error.Details.Reason != "no_quorum" {
		t.Errorf("/readyz without quorum: %d %s", w.Code, w.Body)
	}

	has.Store(true)
	if w := do("GET", "/v1/vms", admin); w.Code != http.StatusOK {
		t.Errorf("GET /v1/vms with quorum: %d %s", w.Code, w.Body)
	}
	if w := do("GET", "/readyz", ""); w.Code != http.StatusOK {
		t.Errorf("/readyz with quorum: %d %s", w.Code, w.Body)
	}
}

// TestAgentQuorumGate: the agent listener refuses heartbeats and
// enrollments with 503 no_quorum without quorum, and still serves the CA.
func TestAgentQuorumGate(t *testing.T) {
	cp := newFakeCP()
	h := NewAgentAPI(cp, nil, AgentQuorum(func() bool { return false }))
	for _, c := range []struct{ method, path string }{{"POST", "/v1/heartbeat"}, {"POST", "/v1/enroll"}, {"POST", "/v1/renew"}, {"POST", "/v1/cluster/join"}} {
		r := httptest.NewRequest(c.method, c.path, strings.NewReader(`{}`))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"no_quorum"`) {
			t.Errorf("%s %s without quorum: %d %s", c.method, c.path, w.Code, w.Body)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v1/ca", nil))
	if w.Code != http.StatusOK {
		t.Errorf("GET /v1/ca without quorum: %d", w.Code)
	}
}
