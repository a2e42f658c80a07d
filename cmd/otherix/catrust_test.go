package main

import (
	"crypto/rand"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/security"
)

// tlsIdentity is fakeIdentity over TLS with a certificate issued by a
// cluster CA that the test can swap, serving that CA at GET /v1/ca.
type tlsIdentity struct {
	*fakeIdentity
	srv  *httptest.Server
	cur  atomic.Pointer[tlsCA]
	hits atomic.Int32 // requests other than GET /v1/ca
}

type tlsCA struct {
	ca   *security.CA
	cert tls.Certificate
}

func newTestCA(t *testing.T, name string, sans ...string) *tlsCA {
	t.Helper()
	ca, err := security.NewCA(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServerCert(sans, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsCA{ca: ca, cert: cert}
}

func newTLSIdentity(t *testing.T, first *tlsCA) *tlsIdentity {
	t.Helper()
	ti := &tlsIdentity{fakeIdentity: &fakeIdentity{}}
	ti.cur.Store(first)
	ti.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/ca" {
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(ti.cur.Load().ca.CertPEM())
			return
		}
		ti.hits.Add(1)
		ti.fakeIdentity.ServeHTTP(w, r)
	}))
	// GetConfigForClient, not GetCertificate: without SNI (an IP address)
	// the default certificate httptest adds would win over GetCertificate.
	ti.srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{ti.cur.Load().cert}}, nil
	}}
	ti.srv.StartTLS()
	t.Cleanup(ti.srv.Close)
	return ti
}

// swap makes the server present another certificate, as another server
// would: one that also cannot resume the TLS sessions the first one issued
// (their tickets are sealed with keys only that server holds), so every
// client makes a full handshake and verifies the new certificate.
func (ti *tlsIdentity) swap(t *testing.T, next *tlsCA) {
	t.Helper()
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	ti.srv.TLS.SetSessionTicketKeys([][32]byte{key})
	ti.cur.Store(next)
}

func TestLoginPinsClusterCA(t *testing.T) {
	ca1 := newTestCA(t, "one", "127.0.0.1")
	ti := newTLSIdentity(t, ca1)
	c := newCfgCLI(t)
	fp := ca1.ca.Fingerprint()

	_, stderr := c.okErr("s3cret-password\n", "login", ti.srv.URL, "--user", "admin@localhost", "--password-stdin",
		"--ca-fingerprint", strings.ToUpper(fp))
	if !strings.Contains(stderr, "Pinned cluster CA "+fp) || strings.Contains(stderr, "not enforced") {
		t.Fatalf("login stderr: %q", stderr)
	}
	cx := c.load().Contexts[0]
	if cx.CAFingerprint != fp || cx.CAPEM != string(ca1.ca.CertPEM()) || cx.RefreshToken == "" {
		t.Fatalf("context after login: %+v", cx)
	}
	out := c.ok("", "whoami")
	if !strings.Contains(out, "admin@localhost") || !strings.Contains(out, ti.srv.URL) {
		t.Fatalf("whoami over TLS: %s", out)
	}
	view := c.ok("", "config", "view")
	if !strings.Contains(view, "ca_pem: '-----BEGIN CERTIFICATE----- ") && !strings.Contains(view, "ca_pem: -----BEGIN CERTIFICATE----- ") ||
		strings.Contains(view, string(ca1.ca.CertPEM()[30:90])) || !strings.Contains(view, fp) {
		t.Fatalf("config view shows the CA wrongly:\n%s", view)
	}

	// A login without --ca-fingerprint to the same server keeps the pin.
	c.ok("", "login", ti.srv.URL, "--token", "otx_good")
	if cx := c.load().Contexts[0]; cx.CAPEM != string(ca1.ca.CertPEM()) || cx.APIToken != "otx_good" {
		t.Fatalf("pin lost on a second login: %+v", cx)
	}

	// The server now presents a certificate of another CA (one the system
	// does not trust either): every command refuses it, before sending
	// credentials.
	ca2 := newTestCA(t, "two", "127.0.0.1")
	ti.swap(t, ca2)
	before := ti.hits.Load()
	for _, args := range [][]string{{"whoami"}, {"cluster", "info"}, {"login", ti.srv.URL, "--token", "otx_good"}} {
		code, _, stderr := c.run("", args...)
		if code != 1 || !strings.Contains(stderr, "not signed by the cluster CA pinned for it ("+fp+")") || !strings.Contains(stderr, "[untrusted_server]") {
			t.Errorf("%v against another CA: exit %d, %q", args, code, stderr)
		}
	}
	if n := ti.hits.Load(); n != before {
		t.Fatalf("%d requests reached a server the pinned CA did not certify", n-before)
	}
	if cx := c.load().Contexts[0]; cx.CAPEM != string(ca1.ca.CertPEM()) {
		t.Fatalf("pin replaced by a refused login: %+v", cx)
	}

	// Pinning the new CA explicitly is how an operator accepts it.
	c.ok("", "login", ti.srv.URL, "--token", "otx_good", "--ca-fingerprint", ca2.ca.Fingerprint())
	if cx := c.load().Contexts[0]; cx.CAPEM != string(ca2.ca.CertPEM()) || cx.CAFingerprint != ca2.ca.Fingerprint() {
		t.Fatalf("re-pin: %+v", cx)
	}
	c.ok("", "whoami")
}

func TestLoginCAFingerprintRefused(t *testing.T) {
	ca1 := newTestCA(t, "one", "127.0.0.1")
	ti := newTLSIdentity(t, ca1)
	other := newTestCA(t, "other", "127.0.0.1").ca.Fingerprint()
	c := newCfgCLI(t)

	code, _, stderr := c.run("s3cret-password\n", "login", ti.srv.URL, "--user", "admin@localhost", "--password-stdin", "--ca-fingerprint", other)
	want := "ca fingerprint mismatch: server presented " + ca1.ca.Fingerprint() + ", pinned " + other
	if code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "[ca_fingerprint_mismatch]") {
		t.Fatalf("wrong fingerprint: exit %d, %q; want %q", code, stderr, want)
	}

	// No fingerprint and no CA pinned for the server: the system roots do
	// not know the cluster CA.
	code, _, stderr = c.run("s3cret-password\n", "login", ti.srv.URL, "--user", "admin@localhost", "--password-stdin")
	if code != 1 || !strings.Contains(stderr, msgUnknownCA) {
		t.Fatalf("no fingerprint: exit %d, %q", code, stderr)
	}

	// The right CA, but a server certificate for another host.
	wrongHost := newTestCA(t, "host", "api.example.invalid")
	ti.swap(t, wrongHost)
	code, _, stderr = c.run("", "login", ti.srv.URL, "--token", "otx_good", "--ca-fingerprint", wrongHost.ca.Fingerprint())
	if code != 1 || !strings.Contains(stderr, "does not verify against the pinned cluster CA") {
		t.Fatalf("wrong host: exit %d, %q", code, stderr)
	}

	if ti.hits.Load() != 0 {
		t.Fatalf("%d requests beyond GET /v1/ca reached an unverified server", ti.hits.Load())
	}
	if _, err := os.Stat(c.cfg); err == nil {
		t.Fatalf("a refused login wrote the config")
	}
}

// okErr is ok that also returns stderr.
func (c cfgCLI) okErr(stdin string, args ...string) (string, string) {
	c.t.Helper()
	code, stdout, stderr := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("otherix %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout, stderr
}
