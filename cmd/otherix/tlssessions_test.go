package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/security"
)

// sessionServer is a TLS server of a fresh CA that counts resumed
// handshakes.
func sessionServer(t *testing.T) (*httptest.Server, *x509.Certificate, *atomic.Int32) {
	t.Helper()
	ca, err := security.NewCA("sessions", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServerCert([]string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var resumed atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS.DidResume {
			resumed.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, ca.Certificate(), &resumed
}

// invoke is one CLI process's request: a new client with a new cache
// object over the same directory, as a new process would have.
func invoke(t *testing.T, url string, ca *x509.Certificate, dir, pin string) {
	t.Helper()
	hc := pinnedHTTPClient(ca, newFileSessionCache(dir, pin))
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestTLSSessionResumedAcrossInvocations(t *testing.T) {
	srv, ca, resumed := sessionServer(t)
	dir := t.TempDir()
	pin := security.Fingerprint(ca)
	invoke(t, srv.URL, ca, dir, pin)
	if resumed.Load() != 0 {
		t.Fatal("the first invocation resumed a session it cannot have")
	}
	fi, err := os.Lstat(filepath.Join(dir, sessionCacheFile))
	if err != nil || fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Fatalf("cache file: %v, %v", fi, err)
	}
	invoke(t, srv.URL, ca, dir, pin)
	if resumed.Load() != 1 {
		t.Fatalf("the second invocation did not resume (%d resumed)", resumed.Load())
	}
	// Another pin (another cluster's CA at the same address) does not see
	// this one's sessions.
	invoke(t, srv.URL, ca, dir, "SHA256:other")
	if resumed.Load() != 1 {
		t.Fatal("a session was offered under another CA pin")
	}
}

func TestTLSSessionCacheRefusesUnsafeFiles(t *testing.T) {
	srv, ca, resumed := sessionServer(t)
	pin := security.Fingerprint(ca)
	good := t.TempDir()
	invoke(t, srv.URL, ca, good, pin) // a valid cache to copy or point at
	valid, err := os.ReadFile(filepath.Join(good, sessionCacheFile))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(t *testing.T, path string){
		"invalid json": func(t *testing.T, path string) { write(t, path, []byte("{not json"), 0o600) },
		"garbage state": func(t *testing.T, path string) {
			write(t, path, []byte(`{"version":1,"sessions":{"`+pin+`|127.0.0.1":{"ticket":"AAEC","state":"AAEC","saved":"`+
				time.Now().UTC().Format(time.RFC3339)+`"}}}`), 0o600)
		},
		"readable by others": func(t *testing.T, path string) { write(t, path, valid, 0o644) },
		"symlink": func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(good, sessionCacheFile), path); err != nil {
				t.Fatal(err)
			}
		},
		"a directory": func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, prepare := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, sessionCacheFile)
			prepare(t, path)
			before := resumed.Load()
			invoke(t, srv.URL, ca, dir, pin)
			if resumed.Load() != before {
				t.Fatal("resumed from a cache file that must be ignored")
			}
		})
	}
	// The symlink was replaced by the new cache, its target untouched.
	target, err := os.ReadFile(filepath.Join(good, sessionCacheFile))
	if err != nil || string(target) != string(valid) {
		t.Fatalf("the symlink's target changed: %v", err)
	}
}

func write(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestResumedSessionVerifiedAgainstPin: a session of another CA's server
// planted in the cache under this context's pin (the file is the user's;
// the test keeps Go's promise in view) is refused: Go verifies a resumed
// session's chain against the pinned CA, as in a full handshake.
func TestResumedSessionVerifiedAgainstPin(t *testing.T) {
	other, otherCA, resumed := sessionServer(t)
	_, ours, _ := sessionServer(t)
	dir := t.TempDir()
	invoke(t, other.URL, otherCA, dir, "pin-other")
	path := filepath.Join(dir, sessionCacheFile)
	m := readSessionFile(path)
	for k, e := range m {
		m[security.Fingerprint(ours)+k[len("pin-other"):]] = e
	}
	if err := writeSessionFile(path, m, time.Now()); err != nil {
		t.Fatal(err)
	}
	hc := pinnedHTTPClient(ours, newFileSessionCache(dir, security.Fingerprint(ours)))
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(other.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a resumed session of another CA's server was accepted (%d resumed)", resumed.Load())
	}
}

// TestCLIResumesTLSSession: each otherix invocation after the first
// resumes the TLS session the previous one kept, through the context's
// pinned CA, and still works when the server forgot the session (a
// restarted replica): a full handshake, and the new session is kept.
func TestCLIResumesTLSSession(t *testing.T) {
	ca := newTestCA(t, "one", "127.0.0.1")
	f := &fakeIdentity{}
	var resumed, requests atomic.Int32
	newServer := func() *httptest.Server {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/ca" {
				_, _ = w.Write(ca.ca.CertPEM())
				return
			}
			requests.Add(1)
			if r.TLS.DidResume {
				resumed.Add(1)
			}
			f.ServeHTTP(w, r)
		}))
		srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return &tls.Config{Certificates: []tls.Certificate{ca.cert}}, nil
		}}
		return srv
	}
	srv := newServer()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := newCfgCLI(t)
	c.ok("", "login", srv.URL, "--token", "otx_good", "--ca-fingerprint", ca.ca.Fingerprint())
	for i := range 3 {
		before := resumed.Load()
		c.ok("", "whoami")
		if resumed.Load() != before+1 {
			t.Fatalf("invocation %d did not resume (%d of %d requests resumed)", i+2, resumed.Load(), requests.Load())
		}
	}
	// The same address, new session keys: the kept ticket is useless.
	addr := srv.Listener.Addr().String()
	srv.Close()
	srv2 := newServer()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("address %s taken again before the restart: %v", addr, err)
	}
	srv2.Listener = l
	srv2.StartTLS()
	t.Cleanup(srv2.Close)
	before := resumed.Load()
	c.ok("", "whoami")
	c.ok("", "whoami")
	if resumed.Load() != before+1 {
		t.Fatalf("after a server restart: %d resumed, want the second invocation only", resumed.Load()-before)
	}
}
