package heartbeat

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// fixture is an agent-facing listener that requires a client certificate
// from the cluster CA, and a node certificate for "hv1".
type fixture struct {
	srv    *httptest.Server
	client *http.Client
	posts  atomic.Int64
	mu     sync.Mutex
	cns    []string
	bodies []map[string]any
}

func newFixture(t *testing.T, h func(n int64, w http.ResponseWriter, r *http.Request)) *fixture {
	t.Helper()
	now := time.Now()
	ca, err := security.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csr, err := security.NewNodeKeyAndCSR("hv1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignNodeCSR(csr, "hv1", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path, func(w http.ResponseWriter, r *http.Request) {
		n := f.posts.Add(1)
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.cns = append(f.cns, r.TLS.PeerCertificates[0].Subject.CommonName)
		f.bodies = append(f.bodies, body)
		f.mu.Unlock()
		h(n, w, r)
	})
	f.srv = httptest.NewUnstartedServer(mux)
	srvCert, err := ca.IssueServerCert([]string{"127.0.0.1"}, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{srvCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	if f.client, err = NewClient(nodeCert, ca.Pool(), f.srv.URL); err != nil {
		t.Fatal(err)
	}
	return f
}

func ok(interval int) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(messages.HeartbeatResponse{IntervalSeconds: interval})
	}
}

func envelope(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "details": details}})
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (f *fixture) loop(logs *syncBuf) *Loop {
	return &Loop{
		Client: f.client,
		URL:    URL(f.srv.URL + "/"),
		Observe: func(context.Context) messages.Heartbeat {
			return messages.Heartbeat{AgentVersion: "test", Arch: "amd64"}
		},
		Log: slog.New(slog.NewTextHandler(logs, nil)),
	}
}

// run starts l and returns a stop function that waits for Run to return.
func run(t *testing.T, l *Loop) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func TestLoopUsesClientCertAndResponseInterval(t *testing.T) {
	f := newFixture(t, ok(1))
	var logs syncBuf
	l := f.loop(&logs)
	l.DefaultInterval = time.Hour // only the answer's 1 s can bring a second post
	var desired atomic.Int64
	l.OnDesired = func(messages.DesiredState) { desired.Add(1) }
	run(t, l)

	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "two posts", func() bool { return f.posts.Load() >= 2 })
	f.mu.Lock()
	for _, cn := range f.cns {
		if cn != "node-hv1" {
			t.Errorf("peer CN = %q, want node-hv1", cn)
		}
	}
	body := f.bodies[0]
	f.mu.Unlock()
	for _, k := range []string{"vms", "pools", "images", "qemu_versions"} {
		if v, ok := body[k].([]any); !ok || len(v) != 0 {
			t.Errorf("%s = %#v, want []", k, body[k])
		}
	}
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "status", func() bool { s := l.Status(); return s.OK && s.Successes >= 2 })
	if s := l.Status(); s.Interval != time.Second || s.LastError != nil {
		t.Errorf("status = %+v", s)
	}
	if desired.Load() < 2 {
		t.Errorf("OnDesired called %d times", desired.Load())
	}
	if n := strings.Count(logs.String(), "heartbeat accepted"); n != 1 {
		t.Errorf("'heartbeat accepted' logged %d times:\n%s", n, logs.String())
	}
}

func TestLoopBacksOffAndRecovers(t *testing.T) {
	f := newFixture(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n <= 3 {
			envelope(w, http.StatusServiceUnavailable, "unavailable", "etcd is not answering", nil)
			return
		}
		ok(1)(n, w, r)
	})
	var logs syncBuf
	l := f.loop(&logs)
	l.MinBackoff = 10 * time.Millisecond
	run(t, l)

	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "recovery", func() bool { s := l.Status(); return s.OK })
	s := l.Status()
	if s.Failures != 3 || s.Successes < 1 || s.ConsecutiveFailures != 0 {
		t.Errorf("status = %+v", s)
	}
	out := logs.String()
	if n := strings.Count(out, "heartbeat failing"); n != 1 {
		t.Errorf("'heartbeat failing' logged %d times, want once for one distinct error:\n%s", n, out)
	}
	if !strings.Contains(out, "code=unavailable") || !strings.Contains(out, `message="etcd is not answering"`) {
		t.Errorf("failure log lacks code/message:\n%s", out)
	}
	if !strings.Contains(out, "heartbeat accepted") || !strings.Contains(out, "after_failures=3") {
		t.Errorf("no first-success log after failures:\n%s", out)
	}
}

func TestLoopRecoveryAfterSuccess(t *testing.T) {
	var fail atomic.Bool
	f := newFixture(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		ok(1)(n, w, r)
	})
	var logs syncBuf
	l := f.loop(&logs)
	l.MinBackoff = 10 * time.Millisecond
	run(t, l)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "first success", func() bool { return l.Status().OK })
	fail.Store(true)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "failures", func() bool { return l.Status().ConsecutiveFailures >= 2 })
	fail.Store(false)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "recovered log", func() bool { return strings.Contains(logs.String(), "heartbeat recovered") })
	if s := l.Status(); !s.OK {
		t.Errorf("status = %+v", s)
	}
}

func TestLoopSurfacesUnknownField(t *testing.T) {
	f := newFixture(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		envelope(w, http.StatusBadRequest, CodeUnknownField, `json: unknown field "gpus"`, map[string]any{"field": "gpus"})
	})
	var logs syncBuf
	l := f.loop(&logs)
	l.MinBackoff = 5 * time.Millisecond
	l.DefaultInterval = 20 * time.Millisecond // caps the backoff
	run(t, l)

	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "several failures", func() bool { return l.Status().Failures >= 4 })
	err := l.Status().LastError
	var se *ServerError
	if !errors.As(err, &se) || !errors.Is(err, &ServerError{Code: CodeUnknownField}) || se.Status != 400 || se.Details["field"] != "gpus" {
		t.Fatalf("LastError = %#v", err)
	}
	if !strings.Contains(err.Error(), "field=gpus") {
		t.Errorf("error text %q does not name the field", err)
	}
	out := logs.String()
	if n := strings.Count(out, "heartbeat failing"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "code=unknown_field") || !strings.Contains(out, "field=gpus") {
		t.Errorf("log lacks code and field:\n%s", out)
	}
}

func TestLoopRefusedCertificate(t *testing.T) {
	f := newFixture(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		envelope(w, http.StatusForbidden, "node_unknown", "no such node", nil)
	})
	l := f.loop(&syncBuf{})
	if _, err := l.Beat(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate was not accepted") {
		t.Fatalf("Beat = %v", err)
	}
}

func TestClientWithoutCertIsRejected(t *testing.T) {
	f := newFixture(t, ok(1))
	tr := f.client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.GetClientCertificate = nil
	l := f.loop(&syncBuf{})
	l.Client = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	if _, err := l.Beat(context.Background()); err == nil {
		t.Fatal("a client without certificate got through")
	}
	if f.posts.Load() != 0 {
		t.Fatal("handler reached without client certificate")
	}
}

func TestJitter(t *testing.T) {
	d := 30 * time.Second
	lo, hi := 27*time.Second, 33*time.Second
	if got := Jitter(d, 0); got != lo {
		t.Errorf("Jitter(r=0) = %v, want %v", got, lo)
	}
	if got := Jitter(d, 0.5); got != d {
		t.Errorf("Jitter(r=0.5) = %v, want %v", got, d)
	}
	for i := range 1000 {
		r := float64(i) / 1000
		if got := Jitter(d, r); got < lo || got > hi {
			t.Fatalf("Jitter(%v) = %v outside [%v, %v]", r, got, lo, hi)
		}
	}
}

func TestNextBackoff(t *testing.T) {
	var got []time.Duration
	b := time.Duration(0)
	for range 7 {
		b = nextBackoff(b, time.Second, 30*time.Second)
		got = append(got, b)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoffs = %v", got)
		}
	}
}

func TestNewClientRejectsNonHTTPS(t *testing.T) {
	if _, err := NewClient(tls.Certificate{}, nil, "http://x:1"); err == nil {
		t.Fatal("want error for http URL")
	}
}

func TestLoopWakeBeatsAtOnce(t *testing.T) {
	f := newFixture(t, ok(3600))
	var logs syncBuf
	l := f.loop(&logs)
	run(t, l)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the first post", func() bool { return f.posts.Load() >= 1 })
	l.Wake()
	l.Wake() // merged with the pending one
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the woken post", func() bool { return f.posts.Load() >= 2 })
	time.Sleep(100 * time.Millisecond)
	if n := f.posts.Load(); n > 3 {
		t.Errorf("%d posts after two wakes", n)
	}
}
