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

// TestCreateExistingSaysAlreadyExists: re-running create -f on resources
// that exist reports already_exists naming each, whatever guard the API
// tripped first (an overlapping cidr, an address in use).
func TestCreateExistingSaysAlreadyExists(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/networks":
			writeJSONAnswer(w, 409, `{"error":{"code":"network_cidr_conflict","message":"the cidr overlaps network backend"}}`)
		case "POST /v1/vms":
			writeJSONAnswer(w, 409, `{"error":{"code":"address_in_use","message":"10.0.0.10 is in use"}}`)
		case "GET /v1/networks/backend":
			writeJSONAnswer(w, 200, `{"id":"n1","name":"backend","cidr":"10.0.0.0/24","type":"overlay"}`)
		case "GET /v1/vms/web-1":
			writeJSONAnswer(w, 200, `{"id":"v1","name":"web-1","spec":{},"status":{}}`)
		default:
			writeJSONAnswer(w, 404, `{"error":{"code":"not_found","message":"not found"}}`)
		}
	}))
	defer srv.Close()
	p := writeManifest(t, "kind: Network\nmetadata: {name: backend}\nspec: {cidr: 10.0.0.0/24}\n---\n"+
		"kind: VM\nmetadata: {name: web-1}\nspec: {image: {url: https://i.example/a.img}, networks: [{network: backend, ip: 10.0.0.10}]}\n---\n"+
		"kind: VM\nmetadata: {name: web-2}\nspec: {image: {url: https://i.example/a.img}, networks: [{network: backend, ip: 10.0.0.10}]}\n")
	code, _, stderr := runCLI(t, srv.URL, "create", "-f", p)
	for _, want := range []string{
		"network/backend: network/backend already exists",
		"vm/web-1: vm/web-1 already exists",
		"vm/web-2: 10.0.0.10 is in use [address_in_use]", // a real conflict keeps its code
		"3 of 3 resources failed [partial_failure]",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code == 0 {
		t.Fatal("exit 0")
	}
}
