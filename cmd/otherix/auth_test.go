package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/otherix/otherix/messages"
)

// fakeIdentity is an API with one user and one rotating session: access
// token "a<N>" and refresh token "r<N>" of generation N, plus the API token
// "otx_good".
type fakeIdentity struct {
	mu       sync.Mutex
	gen      int
	loggedIn bool
	seen     []string // Authorization headers of /v1/users/me
}

func (f *fakeIdentity) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	access, refresh := "a"+strconv.Itoa(f.gen), "r"+strconv.Itoa(f.gen)
	pair := func() {
		writeJSONAnswer(w, 200, `{"access_token":"a`+strconv.Itoa(f.gen)+`","refresh_token":"r`+strconv.Itoa(f.gen)+`","expires_in":900,"token_type":"Bearer"}`)
	}
	unauth := func() {
		writeJSONAnswer(w, 401, `{"error":{"code":"unauthenticated","message":"invalid credentials"}}`)
	}
	switch r.URL.Path {
	case "/v1/auth/login":
		var req messages.LoginRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Email != "admin@localhost" || req.Password != "s3cret-password" {
			unauth()
			return
		}
		f.gen++
		f.loggedIn = true
		pair()
	case "/v1/auth/refresh":
		var req messages.RefreshRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if !f.loggedIn || req.RefreshToken != refresh {
			unauth()
			return
		}
		f.gen++
		pair()
	case "/v1/auth/logout":
		f.loggedIn = false
		w.WriteHeader(204)
	case "/v1/users/me":
		got := r.Header.Get("Authorization")
		f.seen = append(f.seen, got)
		if got != "Bearer otx_good" && (!f.loggedIn || got != "Bearer "+access) {
			unauth()
			return
		}
		writeJSONAnswer(w, 200, `{"id":"u1","email":"admin@localhost","role":"admin"}`)
	default:
		http.NotFound(w, r)
	}
}

// cfgCLI runs the CLI with a config file of its own and no --server.
type cfgCLI struct {
	t   *testing.T
	cfg string
}

func newCfgCLI(t *testing.T) cfgCLI {
	return cfgCLI{t: t, cfg: filepath.Join(t.TempDir(), "otherix", "config")}
}

func (c cfgCLI) run(stdin string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := runIO(context.Background(), append([]string{"--config", c.cfg}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func (c cfgCLI) ok(stdin string, args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("otherix %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

func (c cfgCLI) load() *cliConfig {
	c.t.Helper()
	cfg, err := loadConfig(c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

func TestLoginWhoamiRefreshLogout(t *testing.T) {
	f := &fakeIdentity{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := newCfgCLI(t)

	out := c.ok("s3cret-password\n", "login", srv.URL, "--user", "admin@localhost", "--password-stdin")
	if !strings.Contains(out, "Logged in to "+srv.URL+" as admin@localhost (admin)") {
		t.Fatalf("login printed %q", out)
	}
	st, err := os.Stat(c.cfg)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v, %v; want 0600", st.Mode(), err)
	}
	if dst, _ := os.Stat(filepath.Dir(c.cfg)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("config dir mode %v; want 0700", dst.Mode())
	}
	name := strings.TrimPrefix(srv.URL, "http://")
	cfg := c.load()
	if cfg.CurrentContext != name || len(cfg.Contexts) != 1 || cfg.Contexts[0].AccessToken != "a1" || cfg.Contexts[0].RefreshToken != "r1" || cfg.Contexts[0].User != "admin@localhost" {
		t.Fatalf("config after login: %+v", cfg)
	}

	out = c.ok("", "whoami")
	for _, want := range []string{"admin@localhost", "admin", name, srv.URL} {
		if !strings.Contains(out, want) {
			t.Fatalf("whoami lacks %q: %s", want, out)
		}
	}

	// A stale access token is refreshed transparently and the new pair saved.
	cfg.Contexts[0].AccessToken = "garbage"
	if err := saveConfig(c.cfg, cfg); err != nil {
		t.Fatal(err)
	}
	c.ok("", "whoami")
	if cx := c.load().Contexts[0]; cx.AccessToken != "a2" || cx.RefreshToken != "r2" {
		t.Fatalf("refreshed pair not saved: %+v", cx)
	}

	view := c.ok("", "config", "view")
	if strings.Contains(view, "a2") || strings.Contains(view, "r2") || strings.Count(view, "REDACTED") != 2 {
		t.Fatalf("config view leaks or misses tokens:\n%s", view)
	}

	out = c.ok("", "logout")
	if !strings.Contains(out, "Logged out") || f.loggedIn {
		t.Fatalf("logout: %q, server still logged in: %v", out, f.loggedIn)
	}
	if cx := c.load().Contexts[0]; cx.AccessToken != "" || cx.RefreshToken != "" || cx.Server != srv.URL {
		t.Fatalf("after logout: %+v", cx)
	}
	if code, _, stderr := c.run("", "whoami"); code != 1 || !strings.Contains(stderr, "[unauthenticated]") || !strings.Contains(stderr, "otherix login "+srv.URL) {
		t.Fatalf("whoami after logout: exit %d, %q", code, stderr)
	}
}

func TestLoginFailures(t *testing.T) {
	srv := httptest.NewServer(&fakeIdentity{})
	defer srv.Close()
	c := newCfgCLI(t)
	// Mistakes in the command line exit 2, refusals by the server 1.
	for _, tt := range []struct {
		stdin string
		args  []string
		want  string
		code  int
	}{
		{"", []string{"login", srv.URL, "--user", "admin@localhost"}, "[no_terminal]", 1},
		{"", []string{"login", srv.URL}, "--user EMAIL is required", 2},
		{"", []string{"login", srv.URL, "--token", "abc"}, "--token must be an otx_ API token", 2},
		{"", []string{"login", srv.URL, "--token", "otx_x", "--user", "a@b.c"}, "cannot be combined", 2},
		{"", []string{"login", srv.URL, "--user", "admin@localhost", "--password-stdin"}, "no password on stdin", 2},
		{"wrong\n", []string{"login", srv.URL, "--user", "admin@localhost", "--password-stdin"}, "[unauthenticated]", 1},
		{"", []string{"login", srv.URL, "--token", "otx_bad"}, "[unauthenticated]", 1},
		{"", []string{"login", srv.URL, "--token", "otx_good", "--ca-fingerprint", "zz"}, "64 hex digits", 2},
		{"", []string{"login", srv.URL, "--token", "otx_good", "--ca-fingerprint", strings.Repeat("ab", 32)}, "is plain http", 2},
		{"", []string{"config", "use-context", "nope"}, `no context "nope"`, 2},
		{"", []string{"--context", "nope", "whoami"}, `no context "nope"`, 2},
	} {
		code, _, stderr := c.run(tt.stdin, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.want)
		}
	}
	if _, err := os.Stat(c.cfg); err == nil {
		t.Errorf("a failed login wrote the config")
	}
}

func TestContextsAndAPIToken(t *testing.T) {
	f1, f2 := &fakeIdentity{}, &fakeIdentity{}
	s1, s2 := httptest.NewServer(f1), httptest.NewServer(f2)
	defer s1.Close()
	defer s2.Close()
	c := newCfgCLI(t)
	c.ok("s3cret-password\n", "login", s1.URL, "--user", "admin@localhost", "--password-stdin", "--context", "one")
	c.ok("", "login", s2.URL+"/", "--token", "otx_good", "--context", "two")
	cfg := c.load()
	if cx := cfg.context("two"); cx == nil || cx.APIToken != "otx_good" || cx.CAFingerprint != "" || cx.CAPEM != "" || cx.Server != s2.URL || cfg.CurrentContext != "two" {
		t.Fatalf("context two: %+v", cfg)
	}
	out := c.ok("", "config", "get-contexts")
	if !strings.Contains(out, "*         two") || !strings.Contains(out, "api-token") || !strings.Contains(out, "session") {
		t.Fatalf("get-contexts:\n%s", out)
	}
	n2 := len(f2.seen)
	c.ok("", "whoami")
	c.ok("", "config", "use-context", "one")
	c.ok("", "whoami")
	c.ok("", "--context", "two", "whoami")
	if len(f2.seen) != n2+2 || f2.seen[len(f2.seen)-1] != "Bearer otx_good" || f1.seen[len(f1.seen)-1] != "Bearer a1" {
		t.Fatalf("calls went to the wrong server: one %q, two %q", f1.seen, f2.seen)
	}
	// --server to a server no context is for sends no credentials.
	f3seen := &fakeIdentity{}
	s4 := httptest.NewServer(f3seen)
	defer s4.Close()
	c.run("", "--server", s4.URL, "whoami")
	if len(f3seen.seen) != 1 || f3seen.seen[0] != "" {
		t.Fatalf("credentials sent to a foreign --server: %q", f3seen.seen)
	}
	view := c.ok("", "config", "view")
	if strings.Contains(view, "otx_good") || strings.Contains(view, "a1") {
		t.Fatalf("config view leaks a token:\n%s", view)
	}
	c.ok("", "config", "delete-context", "one")
	if cfg := c.load(); len(cfg.Contexts) != 1 || cfg.CurrentContext != "" {
		t.Fatalf("after delete-context: %+v", cfg)
	}
}

func TestCleartextToRemote(t *testing.T) {
	for server, want := range map[string]bool{
		"http://127.0.0.1:7080":     false,
		"http://localhost:7080":     false,
		"http://[::1]:7080":         false,
		"https://api.example:8443":  false,
		"http://api.example:7080":   true,
		"http://192.0.2.10:7080":    true,
		"http://127.0.0.1.nip.test": true,
	} {
		if got := cleartextToRemote(server); got != want {
			t.Errorf("cleartextToRemote(%q) = %v, want %v", server, got, want)
		}
	}
}
