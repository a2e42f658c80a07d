//go:build etcd

package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// postJSON posts body to url with extra headers and returns the status, the
// Retry-After header and the envelope's code.
func postJSON(t *testing.T, hc *http.Client, url string, body any, hdr map[string]string) (int, string, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &env)
	return resp.StatusCode, resp.Header.Get("Retry-After"), env.Error.Code
}

// floodUntil429 sends up to limit requests and returns how many were served
// before the first 429, failing unless that 429 is rate_limited with a
// Retry-After of at least a second. served is also checked against the
// default budget: the 240 burst plus what refilled (4 a second) while the
// flood ran.
func floodUntil429(t *testing.T, limit int, send func(i int) (int, string, string)) int {
	t.Helper()
	start := time.Now()
	for i := range limit {
		status, after, code := send(i)
		if status != http.StatusTooManyRequests {
			continue
		}
		if code != "rate_limited" {
			t.Fatalf("429 with code %q, want rate_limited", code)
		}
		if n, err := strconv.Atoi(after); err != nil || n < 1 {
			t.Fatalf("429 with Retry-After %q, want whole seconds >= 1", after)
		}
		if allowed := 240 + 1 + int(4*time.Since(start).Seconds()); i > allowed {
			t.Fatalf("%d requests served before the limit, want at most %d", i, allowed)
		}
		return i
	}
	t.Fatalf("%d requests from one address and no 429", limit)
	return 0
}

// TestE2EAnonymousRateLimit: the public routes are limited per TCP peer, a
// forged X-Forwarded-For does not buy a fresh budget, and the answer is 429
// rate_limited with Retry-After (checked against the contract).
func TestE2EAnonymousRateLimit(t *testing.T) {
	env := startEnv(t)
	floodUntil429(t, 1000, func(i int) (int, string, string) {
		return postJSON(t, env.hc, env.url+"/v1/auth/refresh", messages.RefreshRequest{RefreshToken: "otr_forged"},
			map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i%250), "X-Real-IP": "198.51.100.7"})
	})
	// The budget is the address's, on every unauthenticated route.
	status, _, code := postJSON(t, env.hc, env.url+"/v1/auth/login", messages.LoginRequest{Email: adminEmail, Password: adminPassword}, nil)
	if status != http.StatusTooManyRequests || code != "rate_limited" {
		t.Fatalf("login after the flood = %d %s, want 429 rate_limited", status, code)
	}
	// Authenticated routes are not charged.
	if _, err := env.admin.Me(t.Context()); err != nil {
		t.Fatalf("an authenticated request after the flood: %v", err)
	}
}

// TestE2EAgentListenerRateLimit: made-up join tokens on the agent listener
// are limited per address too, and the flood leaves a bounded audit trail.
func TestE2EAgentListenerRateLimit(t *testing.T) {
	env := startEnv(t)
	agent := httptest.NewServer(NewAgentAPI(env.gw, nil))
	t.Cleanup(agent.Close)
	fp := env.gw.CA().Fingerprint()
	served := floodUntil429(t, 1000, func(i int) (int, string, string) {
		tok, _, _, err := security.NewJoinToken(fp)
		if err != nil {
			t.Fatal(err)
		}
		return postJSON(t, http.DefaultClient, agent.URL+"/v1/enroll",
			messages.EnrollRequest{Token: tok, Name: fmt.Sprintf("n%d", i)}, nil)
	})
	resp, err := http.Get(agent.URL + "/v1/ca")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("/v1/ca after the flood = %d, want 429", resp.StatusCode)
	}
	// The refused enrollments are one audit entry (the first of the window),
	// not one per made-up token.
	var n int
	testutil.EventuallyReport(t, 10*time.Second, 50*time.Millisecond, "the first refused enrollment audited", func() (bool, string) {
		all, err := listAllAudit(t.Context(), env.admin)
		if err != nil {
			return false, err.Error()
		}
		n = 0
		for _, e := range all {
			if e.Action == "node.enroll" {
				n++
			}
		}
		return n >= 1, fmt.Sprint(n)
	})
	if n > 2 {
		t.Fatalf("%d audit entries for %d refused enrollments within one window", n, served)
	}
}
