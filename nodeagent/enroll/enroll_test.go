package enroll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// fakeAPI is the control plane's agent-facing listener as far as enrollment
// sees it: GET /v1/ca and POST /v1/enroll, signing CSRs with a test CA.
type fakeAPI struct {
	srv      *httptest.Server
	ca       *security.CA // signs CSRs
	servedCA []byte       // what GET /v1/ca answers
	requests atomic.Int32 // every request
	enrolls  atomic.Int32 // POST /v1/enroll
	renews   atomic.Int32 // POST /v1/renew
	// renewAs, when set, is the node name renewals are signed for.
	renewAs string
	// refuse, when set, is the error envelope every enroll gets.
	refuse *refusal
}

type refusal struct {
	status  int
	code    string
	message string
	details map[string]any
}

// startFake serves with a certificate for 127.0.0.1 issued by tlsCA, and
// signs CSRs with ca (normally the same CA).
func startFake(t *testing.T, ca, tlsCA *security.CA) *fakeAPI {
	t.Helper()
	f := &fakeAPI{ca: ca, servedCA: ca.CertPEM()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(f.servedCA)
	})
	mux.HandleFunc("POST /v1/enroll", f.enroll)
	mux.HandleFunc("POST /v1/renew", f.renew)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	cert, err := tlsCA.IssueServerCert([]string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Enrollment has no client certificate yet; renewal presents one.
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) enroll(w http.ResponseWriter, r *http.Request) {
	f.enrolls.Add(1)
	fail := func(status int, code, msg string, details map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "details": details}})
	}
	if f.refuse != nil {
		fail(f.refuse.status, f.refuse.code, f.refuse.message, f.refuse.details)
		return
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	var req messages.EnrollRequest
	if err := dec.Decode(&req); err != nil {
		fail(400, "invalid_body", err.Error(), nil)
		return
	}
	if _, err := security.ParseJoinToken(req.Token); err != nil {
		fail(401, CodeInvalidJoinToken, "the join token is not valid", nil)
		return
	}
	b, _ := pem.Decode([]byte(req.CSR))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		fail(400, CodeCSRPolicy, "bad csr", map[string]any{"reason": security.ReasonMalformedCSR})
		return
	}
	certPEM, fp, err := f.ca.SignNodeCSR(b.Bytes, req.Name, time.Now(), 0)
	if err != nil {
		fail(400, CodeCSRPolicy, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(messages.EnrollResponse{
		Node:              messages.Node{ID: "node-id-" + req.Name, Name: req.Name, CertFingerprint: fp, Phase: messages.NodePending},
		Certificate:       string(certPEM),
		CA:                string(f.ca.CertPEM()),
		HeartbeatInterval: "30s",
	})
}

// renew signs a renewal for the node the client certificate names.
func (f *fakeAPI) renew(w http.ResponseWriter, r *http.Request) {
	f.renews.Add(1)
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, `{"error":{"code":"client_certificate_required","message":"no client certificate"}}`, http.StatusUnauthorized)
		return
	}
	name, err := security.NodeNameFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if f.renewAs != "" {
		name = f.renewAs
	}
	var req messages.RenewRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b, _ := pem.Decode([]byte(req.CSR))
	certPEM, _, err := f.ca.SignNodeCSR(b.Bytes, name, time.Now(), 0)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(messages.RenewResponse{Certificate: string(certPEM), CA: string(f.ca.CertPEM())})
}

func newCA(t *testing.T) *security.CA {
	t.Helper()
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func joinToken(t *testing.T, fingerprint string) string {
	t.Helper()
	tok, _, _, err := security.NewJoinToken(fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func options(t *testing.T, f *fakeAPI, token, name string) Options {
	t.Helper()
	return Options{
		Server:       f.srv.URL,
		Token:        token,
		Name:         name,
		StateDir:     filepath.Join(t.TempDir(), "state"),
		AgentVersion: "test",
		HTTPClient:   &http.Client{Timeout: 10 * time.Second},
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func assertNothingWritten(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s exists after a refusal (stat: %v)", dir, err)
	}
}

func TestBootstrapHappyPath(t *testing.T) {
	ca := newCA(t)
	f := startFake(t, ca, ca)
	opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")

	res, err := Bootstrap(context.Background(), opts)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if res.NodeName != "hv1" || res.NodeID != "node-id-hv1" || res.CAFingerprint != ca.Fingerprint() || res.AlreadyEnrolled {
		t.Errorf("result = %+v", res)
	}
	for file, want := range map[string]os.FileMode{
		"":         0o700,
		KeyFile:    0o600,
		ConfigFile: 0o600,
		CAFile:     0o644,
		CertFile:   0o644,
	} {
		if got := mode(t, filepath.Join(opts.StateDir, file)); got != want {
			t.Errorf("mode of %q = %04o, want %04o", file, got, want)
		}
	}
	st, err := LoadState(opts.StateDir)
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if err := security.VerifyNodeCert(ca, st.Cert, time.Now()); err != nil {
		t.Errorf("VerifyNodeCert: %v", err)
	}
	if got := security.Fingerprint(st.Cert); got != res.CertFingerprint {
		t.Errorf("cert fingerprint %s, result says %s", got, res.CertFingerprint)
	}
	want := Config{Server: f.srv.URL, NodeName: "hv1", NodeID: "node-id-hv1", CAFingerprint: ca.Fingerprint()}
	if st.Config != want {
		t.Errorf("config = %+v, want %+v", st.Config, want)
	}
	if !st.CA.Equal(ca.Certificate()) {
		t.Error("ca.pem is not the cluster CA")
	}
}

func TestBootstrapWrongPinnedFingerprint(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	f := startFake(t, ca, ca)
	opts := options(t, f, joinToken(t, other.Fingerprint()), "hv1")

	_, err := Bootstrap(context.Background(), opts)
	if !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("err = %v, want ErrFingerprintMismatch", err)
	}
	want := "ca fingerprint mismatch: server presented " + ca.Fingerprint() + ", join token pins " + other.Fingerprint()
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
	if n := f.enrolls.Load(); n != 0 {
		t.Errorf("%d enroll requests, want 0", n)
	}
	assertNothingWritten(t, opts.StateDir)
}

func TestBootstrapServerCertFromAnotherCA(t *testing.T) {
	// /v1/ca answers the pinned CA's (public) certificate, but the TLS
	// certificate is from another CA: someone replaying public bytes.
	ca, impostor := newCA(t), newCA(t)
	f := startFake(t, ca, impostor)
	opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")

	_, err := Bootstrap(context.Background(), opts)
	if !errors.Is(err, ErrUntrustedServer) {
		t.Fatalf("err = %v, want ErrUntrustedServer", err)
	}
	if n := f.enrolls.Load(); n != 0 {
		t.Errorf("%d enroll requests, want 0", n)
	}
	assertNothingWritten(t, opts.StateDir)
}

func TestBootstrapNotCAFromServer(t *testing.T) {
	// A pinned fingerprint of a leaf (not a CA) must not become a trust root.
	ca := newCA(t)
	f := startFake(t, ca, ca)
	leaf := f.srv.TLS.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(f.srv.TLS.Certificates[0].Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	f.servedCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	opts := options(t, f, joinToken(t, security.Fingerprint(leaf)), "hv1")
	if _, err := Bootstrap(context.Background(), opts); !errors.Is(err, ErrUntrustedServer) {
		t.Fatalf("err = %v, want ErrUntrustedServer", err)
	}
	assertNothingWritten(t, opts.StateDir)
}

func TestBootstrapIdempotent(t *testing.T) {
	ca := newCA(t)
	f := startFake(t, ca, ca)
	opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")
	first, err := Bootstrap(context.Background(), opts)
	if err != nil {
		t.Fatalf("first Bootstrap: %v", err)
	}
	keyBefore, _ := os.ReadFile(filepath.Join(opts.StateDir, KeyFile))

	// The token is one-time; a re-run must not need it to be valid again.
	opts.Token = joinToken(t, ca.Fingerprint())
	before := f.requests.Load()
	second, err := Bootstrap(context.Background(), opts)
	if err != nil {
		t.Fatalf("second Bootstrap: %v", err)
	}
	if !second.AlreadyEnrolled || second.NodeID != first.NodeID || second.CertFingerprint != first.CertFingerprint {
		t.Errorf("second result = %+v, first = %+v", second, first)
	}
	if n := f.enrolls.Load(); n != 1 {
		t.Errorf("%d enroll requests, want 1", n)
	}
	if n := f.requests.Load() - before; n != 0 {
		t.Errorf("re-run made %d requests, want 0", n)
	}
	keyAfter, _ := os.ReadFile(filepath.Join(opts.StateDir, KeyFile))
	if string(keyBefore) != string(keyAfter) {
		t.Error("re-run replaced the key")
	}

	t.Run("other name refused", func(t *testing.T) {
		o := opts
		o.Name = "hv2"
		_, err := Bootstrap(context.Background(), o)
		if !errors.Is(err, ErrIdentityConflict) || !strings.Contains(err.Error(), "node-hv1") || !strings.Contains(err.Error(), "node-hv2") {
			t.Fatalf("err = %v, want ErrIdentityConflict naming both", err)
		}
		if n := f.enrolls.Load(); n != 1 {
			t.Errorf("%d enroll requests, want 1", n)
		}
	})
	t.Run("other server refused", func(t *testing.T) {
		o := opts
		o.Server = f.srv.URL + "/base"
		if _, err := Bootstrap(context.Background(), o); !errors.Is(err, ErrIdentityConflict) {
			t.Fatalf("err = %v, want ErrIdentityConflict", err)
		}
	})
	t.Run("other name with force", func(t *testing.T) {
		o := opts
		o.Name, o.Force = "hv2", true
		res, err := Bootstrap(context.Background(), o)
		if err != nil {
			t.Fatalf("Bootstrap: %v", err)
		}
		if res.NodeName != "hv2" || res.AlreadyEnrolled || f.enrolls.Load() != 2 {
			t.Errorf("result = %+v, %d enrolls", res, f.enrolls.Load())
		}
		st, err := LoadState(o.StateDir)
		if err != nil || st.Config.NodeName != "hv2" {
			t.Fatalf("LoadState = %+v, %v", st, err)
		}
	})
}

func TestBootstrapReenrollsUnderAnotherCA(t *testing.T) {
	// Same server and name, but the token pins a new cluster CA (the cluster
	// was rebuilt): the old identity no longer chains to it, so enroll again.
	old := newCA(t)
	f := startFake(t, old, old)
	opts := options(t, f, joinToken(t, old.Fingerprint()), "hv1")
	if _, err := Bootstrap(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	fresh := newCA(t)
	cert, err := fresh.IssueServerCert([]string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.TLS.Certificates = []tls.Certificate{cert}
	f.ca, f.servedCA = fresh, fresh.CertPEM()
	opts.Token = joinToken(t, fresh.Fingerprint())
	res, err := Bootstrap(context.Background(), opts)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if res.AlreadyEnrolled || res.CAFingerprint != fresh.Fingerprint() || f.enrolls.Load() != 2 {
		t.Errorf("result = %+v, %d enrolls", res, f.enrolls.Load())
	}
}

func TestBootstrapEnrollErrors(t *testing.T) {
	ca := newCA(t)
	for _, tc := range []refusal{
		{401, CodeInvalidJoinToken, "the join token is unknown, used, expired or revoked", nil},
		{403, CodeNodeNameNotAllowed, "this join token may enroll only node hv9", nil},
		{409, CodeNodeNameConflict, "another node holds the name hv1", nil},
		{400, CodeCSRPolicy, "the certificate request was refused", map[string]any{"reason": security.ReasonCNMismatch}},
	} {
		t.Run(tc.code, func(t *testing.T) {
			f := startFake(t, ca, ca)
			f.refuse = &tc
			opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")
			_, err := Bootstrap(context.Background(), opts)
			var se *ServerError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *ServerError", err)
			}
			if se.Status != tc.status || se.Code != tc.code || se.Message != tc.message {
				t.Errorf("ServerError = %+v", se)
			}
			if !errors.Is(err, &ServerError{Code: tc.code}) {
				t.Errorf("errors.Is by code failed for %v", err)
			}
			for _, want := range []string{tc.code, tc.message} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to contain %q", err, want)
				}
			}
			if tc.details != nil && !strings.Contains(err.Error(), "reason="+security.ReasonCNMismatch) {
				t.Errorf("err = %q, want the csr_policy reason", err)
			}
			assertNothingWritten(t, opts.StateDir)
		})
	}
}

func TestBootstrapNonEnvelopeError(t *testing.T) {
	ca := newCA(t)
	f := startFake(t, ca, ca)
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/ca" {
			_, _ = w.Write(ca.CertPEM())
			return
		}
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	})
	_, err := Bootstrap(context.Background(), options(t, f, joinToken(t, ca.Fingerprint()), "hv1"))
	var se *ServerError
	if !errors.As(err, &se) || se.Status != 502 || !strings.Contains(se.Message, "bad gateway") {
		t.Fatalf("err = %v, want a 502 ServerError with the body excerpt", err)
	}
}

func TestBootstrapBadInputBeforeNetwork(t *testing.T) {
	ca := newCA(t)
	f := startFake(t, ca, ca)
	good := joinToken(t, ca.Fingerprint())
	for _, tc := range []struct {
		name   string
		mutate func(*Options)
		want   error
	}{
		{"malformed token", func(o *Options) { o.Token = "otxj_garbage" }, security.ErrTokenInvalid},
		{"token without fingerprint", func(o *Options) { o.Token, _, _ = strings.Cut(good, "@") }, security.ErrTokenInvalid},
		{"api token", func(o *Options) { o.Token = "otx_" + strings.TrimPrefix(good, "otxj_") }, security.ErrTokenInvalid},
		{"http server", func(o *Options) { o.Server = strings.Replace(o.Server, "https:", "http:", 1) }, ErrBadOptions},
		{"no server", func(o *Options) { o.Server = "" }, ErrBadOptions},
		{"no state dir", func(o *Options) { o.StateDir = "" }, ErrBadOptions},
		{"bad name", func(o *Options) { o.Name = "HV_1" }, ErrBadOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options(t, f, good, "hv1")
			tc.mutate(&o)
			_, err := Bootstrap(context.Background(), o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if o.StateDir != "" {
				assertNothingWritten(t, o.StateDir)
			}
		})
	}
	if n := f.requests.Load(); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
	if _, err := Bootstrap(context.Background(), options(t, f, "otxj_x", "hv1")); err == nil || strings.Contains(err.Error(), "otxj_x") {
		t.Errorf("err = %v: want an error that does not echo the token", err)
	}
}

func TestBootstrapHostName(t *testing.T) {
	ca := newCA(t)
	f := startFake(t, ca, ca)
	defer func(h func() (string, error)) { hostname = h }(hostname)

	hostname = func() (string, error) { return "HV-7", nil }
	res, err := Bootstrap(context.Background(), options(t, f, joinToken(t, ca.Fingerprint()), ""))
	if err != nil || res.NodeName != "hv-7" {
		t.Fatalf("Bootstrap = %+v, %v; want node hv-7", res, err)
	}

	hostname = func() (string, error) { return "hv7.example.com", nil }
	_, err = Bootstrap(context.Background(), options(t, f, joinToken(t, ca.Fingerprint()), ""))
	if !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), "hv7.example.com") {
		t.Fatalf("err = %v, want ErrBadOptions naming the host name", err)
	}
}
