package client

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/otherix/otherix/messages"
)

// fakeAuth is an API with one session: the access token "a<N>" of
// generation N is valid until the next refresh, the refresh token "r<N>"
// rotates to "r<N+1>".
type fakeAuth struct {
	t         *testing.T
	mu        sync.Mutex
	gen       int
	refreshes atomic.Int32
	bodies    []string // bodies of POST /v1/vms, as received
}

func (f *fakeAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	access, refresh := "a"+strconv.Itoa(f.gen), "r"+strconv.Itoa(f.gen)
	switch r.URL.Path {
	case "/v1/auth/login":
		var req messages.LoginRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if r.Header.Get("Authorization") != "" {
			f.t.Errorf("login carried credentials")
		}
		if req.Email != "me@example.com" || req.Password != "correct horse battery" {
			writeErr(w, 401, "unauthenticated")
			return
		}
		writePair(w, access, refresh)
	case "/v1/auth/refresh":
		f.refreshes.Add(1)
		var req messages.RefreshRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.RefreshToken != refresh {
			writeErr(w, 401, "unauthenticated")
			return
		}
		f.gen++
		writePair(w, "a"+strconv.Itoa(f.gen), "r"+strconv.Itoa(f.gen))
	case "/v1/auth/logout":
		writeErr(w, 401, "unauthenticated") // whatever it is, it must not refresh
	default:
		if r.Header.Get("Authorization") != "Bearer "+access {
			writeErr(w, 401, "unauthenticated")
			return
		}
		if r.URL.Path == "/v1/vms" && r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			f.bodies = append(f.bodies, string(b))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(202)
			_, _ = w.Write([]byte(`{"task":{"id":"t1"}}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"u1","email":"me@example.com","role":"admin"}`))
	}
}

func writeErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":{"code":"` + code + `","message":"no"}}`))
}

func writePair(w http.ResponseWriter, access, refresh string) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(messages.TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: 900, TokenType: "Bearer"})
}

func TestLoginAndWrongPassword(t *testing.T) {
	ts := httptest.NewServer(&fakeAuth{t: t})
	defer ts.Close()
	c, _ := New(ts.URL)
	p, err := c.Login(t.Context(), "me@example.com", "correct horse battery")
	if err != nil || p.AccessToken != "a0" || p.RefreshToken != "r0" || p.TokenType != "Bearer" || p.ExpiresIn != 900 {
		t.Fatalf("login: %+v, %v", p, err)
	}
	if _, err := c.Login(t.Context(), "me@example.com", "wrong"); ErrorCode(err) != "unauthenticated" {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestTransparentRefreshReplaysTheBody(t *testing.T) {
	f := &fakeAuth{t: t, gen: 1} // the client's a0/r0 are stale access, wrong refresh…
	ts := httptest.NewServer(f)
	defer ts.Close()
	var saved []messages.TokenPair
	// …so start from a session whose access token expired but whose refresh
	// token is current.
	c, _ := New(ts.URL, WithSession("a0", "r1", func(p messages.TokenPair) { saved = append(saved, p) }))
	acc, err := c.CreateVM(t.Context(), messages.CreateVMRequest{Name: "web-1"})
	if err != nil || acc.Task.ID != "t1" {
		t.Fatalf("create after refresh: %+v, %v", acc, err)
	}
	if len(saved) != 1 || saved[0].AccessToken != "a2" || saved[0].RefreshToken != "r2" {
		t.Fatalf("onRefresh got %+v", saved)
	}
	if len(f.bodies) != 1 || !strings.Contains(f.bodies[0], `"name":"web-1"`) {
		t.Fatalf("the retried request carried %q", f.bodies)
	}
	// The new pair is used from now on without another refresh.
	if _, err := c.Me(t.Context()); err != nil || f.refreshes.Load() != 1 {
		t.Fatalf("me: %v, %d refreshes", err, f.refreshes.Load())
	}
}

func TestConcurrent401sRefreshOnce(t *testing.T) {
	f := &fakeAuth{t: t, gen: 1}
	ts := httptest.NewServer(f)
	defer ts.Close()
	var calls atomic.Int32
	c, _ := New(ts.URL, WithSession("stale", "r1", func(messages.TokenPair) { calls.Add(1) }))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := c.Me(t.Context()); err != nil {
				t.Errorf("me: %v", err)
			}
		})
	}
	wg.Wait()
	// A second rotation of r1 would be reuse, and the server would end the
	// session: exactly one refresh must have been sent.
	if f.refreshes.Load() != 1 || calls.Load() != 1 {
		t.Fatalf("%d refreshes, %d callbacks; want 1 and 1", f.refreshes.Load(), calls.Load())
	}
}

func TestFailedRefreshAnswersTheFirst401(t *testing.T) {
	f := &fakeAuth{t: t, gen: 5}
	ts := httptest.NewServer(f)
	defer ts.Close()
	called := false
	c, _ := New(ts.URL, WithSession("a0", "r0", func(messages.TokenPair) { called = true }))
	_, err := c.Me(t.Context())
	if ErrorCode(err) != "unauthenticated" || called || f.refreshes.Load() != 1 {
		t.Fatalf("err %v, callback %v, %d refreshes", err, called, f.refreshes.Load())
	}
	// Authentication endpoints never trigger a refresh.
	if err := c.Logout(t.Context(), "r0"); ErrorCode(err) != "unauthenticated" || f.refreshes.Load() != 1 {
		t.Fatalf("logout: %v, %d refreshes; want 401 and no new refresh", err, f.refreshes.Load())
	}
}

func TestNoSessionNoRefresh(t *testing.T) {
	f := &fakeAuth{t: t}
	ts := httptest.NewServer(f)
	defer ts.Close()
	c, _ := New(ts.URL, WithToken("otx_nope"))
	if _, err := c.Me(t.Context()); ErrorCode(err) != "unauthenticated" || f.refreshes.Load() != 0 {
		t.Fatalf("err %v, %d refreshes", err, f.refreshes.Load())
	}
}

func TestIdentityRoutes(t *testing.T) {
	type seen struct{ method, path, query, body string }
	var got []seen
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, strings.TrimSpace(string(b))})
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodDelete || r.URL.Path == "/v1/auth/logout":
			w.WriteHeader(204)
		case r.URL.Path == "/v1/tokens" && r.Method == http.MethodPost:
			w.WriteHeader(201)
			_, _ = w.Write([]byte(`{"token":"otx_abc","api_token":{"id":"k1","name":"ci","role":"viewer"}}`))
		case r.URL.Path == "/v1/tokens" || r.URL.Path == "/v1/users" && r.Method == http.MethodGet || r.URL.Path == "/v1/audit":
			_, _ = w.Write([]byte(`{"items":[{"id":"x1"}],"next_cursor":"c2"}`))
		default:
			_, _ = w.Write([]byte(`{"id":"u1","email":"a@b.c","role":"viewer"}`))
		}
	}))
	defer ts.Close()
	c, _ := New(ts.URL, WithToken("otx_t"))
	ctx := t.Context()
	name := "Ann"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.CreateUser(ctx, messages.CreateUserRequest{Email: "a@b.c", Role: "viewer", Password: "pw"})
	must(err)
	users, next, err := c.ListUsers(ctx, ListOptions{Limit: 5})
	must(err)
	if len(users) != 1 || users[0].ID != "x1" || next != "c2" {
		t.Fatalf("users %+v next %q", users, next)
	}
	_, err = c.GetUser(ctx, "u/1")
	must(err)
	_, err = c.SetRole(ctx, "u1", "operator")
	must(err)
	must(c.DeleteUser(ctx, "u1"))
	_, err = c.UpdateMe(ctx, messages.UpdateMeRequest{DisplayName: &name})
	must(err)
	tok, err := c.CreateAPIToken(ctx, messages.CreateAPITokenRequest{Name: "ci", Role: "viewer", TTL: "720h"})
	must(err)
	if tok.Token != "otx_abc" || tok.APIToken.ID != "k1" {
		t.Fatalf("created %+v", tok)
	}
	_, _, err = c.ListAPITokens(ctx, true, ListOptions{})
	must(err)
	_, _, err = c.ListAPITokens(ctx, false, ListOptions{})
	must(err)
	must(c.RevokeAPIToken(ctx, "k1"))
	audit, _, err := c.ListAudit(ctx, ListOptions{Cursor: "c1"})
	must(err)
	if len(audit) != 1 || audit[0].ID != "x1" {
		t.Fatalf("audit %+v", audit)
	}
	must(c.Logout(ctx, "r9"))
	want := []seen{
		{"POST", "/v1/users", "", `{"email":"a@b.c","role":"viewer","password":"pw"}`},
		{"GET", "/v1/users", "limit=5", ""},
		{"GET", "/v1/users/u%2F1", "", ""},
		{"PUT", "/v1/users/u1/role", "", `{"role":"operator"}`},
		{"DELETE", "/v1/users/u1", "", ""},
		{"PATCH", "/v1/users/me", "", `{"display_name":"Ann"}`},
		{"POST", "/v1/tokens", "", `{"name":"ci","role":"viewer","ttl":"720h"}`},
		{"GET", "/v1/tokens", "all=true", ""},
		{"GET", "/v1/tokens", "", ""},
		{"DELETE", "/v1/tokens/k1", "", ""},
		{"GET", "/v1/audit", "cursor=c1", ""},
		{"POST", "/v1/auth/logout", "", `{"refresh_token":"r9"}`},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d requests: %+v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
