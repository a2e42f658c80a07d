package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLoginURLHints: a URL without a scheme, and plain http:// to an HTTPS
// listener, are answered with the https:// URL to use.
func TestLoginURLHints(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, 200, `{}`)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, tt := range []struct {
		url  string
		want string
	}{
		{host, `did you mean https://` + host + `?`},
		{"127.0.0.1:7080", `did you mean https://127.0.0.1:7080?`},
		{"http://" + host, `answers HTTPS: use https://` + host},
	} {
		code, _, stderr := runCLI(t, "http://127.0.0.1:1", "login", tt.url, "--token", "otx_test")
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("login %s: exit %d, stderr %q; want %q", tt.url, code, stderr, tt.want)
		}
	}
}

// TestUnauthenticatedSaysLogInOnce: the API's 401 already says "log in
// again"; the CLI's hint must not repeat it.
func TestUnauthenticatedSaysLogInOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, 401, `{"error":{"code":"unauthenticated","message":"a valid bearer token is required; log in again"}}`)
	}))
	defer srv.Close()
	code, _, stderr := runCLI(t, srv.URL, "vm", "list")
	if code == 0 || strings.Count(stderr, "log in") != 1 || !strings.Contains(stderr, "otherix login "+srv.URL) {
		t.Fatalf("exit %d, stderr %q; want one 'log in' with the login command", code, stderr)
	}
}
