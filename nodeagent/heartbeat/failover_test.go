package heartbeat

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestLoopFailsOverBetweenReplicas: three replicas of one cluster CA on
// loopback: the first refuses connections, the second lost quorum, the
// third answers. Heartbeats reach the third, under the name each is dialled
// by (one certificate per replica, for its own host), hand the replica list
// of the answer to OnReplicas, and stay with the third from then on.
func TestLoopFailsOverBetweenReplicas(t *testing.T) {
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
	replica := func(host string, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
		var hits atomic.Int64
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			h(w, r)
		}))
		cert, err := ca.IssueServerCert([]string{host}, now, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s, &hits
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	noQuorum, nqHits := replica("127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		envelope(w, http.StatusServiceUnavailable, "no_quorum", "lost quorum", nil)
	})
	var live string
	good, goodHits := replica("localhost", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(messages.HeartbeatResponse{IntervalSeconds: 1, ReplicaURLs: []string{live, noQuorum.URL}})
	})
	// The third replica is dialled by name: its certificate is for
	// localhost only, the others' for 127.0.0.1 only.
	_, port, _ := net.SplitHostPort(good.Listener.Addr().String())
	live = "https://localhost:" + port

	client, tr, err := NewFailoverClient(func() *tls.Certificate { return &nodeCert }, ca.Pool(), []string{dead, noQuorum.URL, live})
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Pointer[[]string]
	var logs syncBuf
	l := &Loop{
		Client:          client,
		URL:             URL(dead),
		Observe:         func(context.Context) messages.Heartbeat { return messages.Heartbeat{AgentVersion: "test"} },
		OnReplicas:      func(urls []string) { got.Store(&urls) },
		Log:             slog.New(slog.NewTextHandler(&logs, nil)),
		DefaultInterval: 50 * time.Millisecond,
	}
	run(t, l)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "three heartbeats accepted", func() bool { return l.Status().Successes >= 3 })
	if p := got.Load(); p == nil || !slices.Equal(*p, []string{live, noQuorum.URL}) {
		t.Fatalf("OnReplicas got %v", p)
	}
	if tr.Current() != live {
		t.Fatalf("sticky replica %s, want %s", tr.Current(), live)
	}
	if nqHits.Load() != 1 {
		t.Fatalf("the no_quorum replica was asked %d times, want once (then the live one is sticky)", nqHits.Load())
	}
	if goodHits.Load() < 3 {
		t.Fatalf("live replica saw %d heartbeats", goodHits.Load())
	}
}

// TestNewFailoverClientRejectsNonHTTPS: every replica must be https.
func TestNewFailoverClientRejectsNonHTTPS(t *testing.T) {
	for _, list := range [][]string{nil, {"http://a:1"}, {"https://a:1", "http://b:1"}, {"https://a:1/path"}} {
		if _, _, err := NewFailoverClient(nil, nil, list); err == nil {
			t.Errorf("%q accepted", list)
		}
	}
}
