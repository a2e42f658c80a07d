package failover

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// replica is one loopback server of a test, counting the requests that
// reached it.
type replica struct {
	URL  string
	hits atomic.Int64
	// bodies are the request bodies it received, in order.
	mu     sync.Mutex
	bodies []string
}

func (r *replica) record(req *http.Request) {
	r.hits.Add(1)
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, string(b))
	r.mu.Unlock()
}

// good answers 200 with its own name.
func good(t *testing.T, name string) *replica {
	r := &replica{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.record(req)
		io.WriteString(w, name+" "+req.Method+" "+req.URL.RequestURI())
	}))
	t.Cleanup(s.Close)
	r.URL = s.URL
	return r
}

// unavailable answers 503 with the error envelope and code.
func unavailable(t *testing.T, code string) *replica {
	r := &replica{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.record(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"code":"`+code+`","message":"`+code+` here","details":{}}}`)
	}))
	t.Cleanup(s.Close)
	r.URL = s.URL
	return r
}

// failing answers status with an error envelope.
func failing(t *testing.T, status int) *replica {
	r := &replica{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.record(req)
		w.WriteHeader(status)
		io.WriteString(w, `{"error":{"code":"internal","message":"boom","details":{}}}`)
	}))
	t.Cleanup(s.Close)
	r.URL = s.URL
	return r
}

// closedPort is a loopback URL nothing listens on: connections are refused.
func closedPort(t *testing.T) *replica {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &replica{URL: "http://" + addr}
}

// resetter reads a whole request (headers and body), then resets the
// connection without answering: the request reached the server, the answer
// was lost.
func resetter(t *testing.T, scheme string) *replica {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{URL: scheme + "://" + ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err == nil {
				r.record(req)
			}
			c.(*net.TCPConn).SetLinger(0) // RST, not FIN
			c.Close()
		}
	}()
	return r
}

// hangup accepts TCP connections and closes them at once: a TLS handshake
// with it fails before any byte of a request is written.
func hangup(t *testing.T) *replica {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{URL: "https://" + ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.hits.Add(1)
			c.Close()
		}
	}()
	return r
}

func urls(rs ...*replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.URL)
	}
	return out
}

// client returns an HTTP client over a fresh transport for rs.
func client(t *testing.T, base http.RoundTripper, rs ...*replica) (*http.Client, *Transport) {
	t.Helper()
	if base == nil {
		base = &http.Transport{}
	}
	tr, err := New(base, urls(rs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr
}

func send(t *testing.T, c *http.Client, method, target, body, key string) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

// TestMovesOnlyWhatIsSafe: which requests go on to the next replica, for
// each way a replica can fail.
func TestMovesOnlyWhatIsSafe(t *testing.T) {
	cases := []struct {
		name         string
		first        func(t *testing.T) *replica
		method, key  string
		wantMoved    bool
		wantFirstHit bool // the failing replica saw the request
		wantStatus   int  // when not moved and answered
	}{
		{"GET, connection refused", closedPort, "GET", "", true, false, 0},
		{"POST, connection refused", closedPort, "POST", "", true, false, 0},
		{"GET, 503 no_quorum", func(t *testing.T) *replica { return unavailable(t, CodeNoQuorum) }, "GET", "", true, true, 0},
		{"POST with key, 503 no_quorum", func(t *testing.T) *replica { return unavailable(t, CodeNoQuorum) }, "POST", "k1", true, true, 0},
		{"POST, 503 no_quorum: may have been proposed", func(t *testing.T) *replica { return unavailable(t, CodeNoQuorum) }, "POST", "", false, true, 503},
		{"POST, 503 not_ready: did nothing", func(t *testing.T) *replica { return unavailable(t, CodeNotReady) }, "POST", "", true, true, 0},
		{"GET, 503 unavailable (an election)", func(t *testing.T) *replica { return unavailable(t, "unavailable") }, "GET", "", true, true, 0},
		{"POST, 503 unavailable: may have been proposed", func(t *testing.T) *replica { return unavailable(t, "unavailable") }, "POST", "", false, true, 503},
		{"GET, 500", func(t *testing.T) *replica { return failing(t, http.StatusInternalServerError) }, "GET", "", false, true, 500},
		{"GET, reset after sending", func(t *testing.T) *replica { return resetter(t, "http") }, "GET", "", true, true, 0},
		{"POST with key, reset after sending", func(t *testing.T) *replica { return resetter(t, "http") }, "POST", "k2", true, true, 0},
		{"POST, reset after sending: must not repeat", func(t *testing.T) *replica { return resetter(t, "http") }, "POST", "", false, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first, second := tc.first(t), good(t, "second")
			c, tr := client(t, nil, first, second)
			body := ""
			if tc.method == "POST" {
				body = `{"name":"x"}`
			}
			resp, got, err := send(t, c, tc.method, first.URL+"/v1/things?limit=5", body, tc.key)
			if tc.wantMoved {
				if err != nil {
					t.Fatalf("not moved: %v", err)
				}
				if resp.StatusCode != 200 || got != "second "+tc.method+" /v1/things?limit=5" {
					t.Fatalf("answer %d %q", resp.StatusCode, got)
				}
				if second.hits.Load() != 1 {
					t.Fatalf("second replica saw %d requests", second.hits.Load())
				}
				if body != "" && second.bodies[0] != body {
					t.Fatalf("body replayed as %q", second.bodies[0])
				}
				if tr.Current() != second.URL {
					t.Fatalf("sticky replica %s, want %s", tr.Current(), second.URL)
				}
			} else {
				if second.hits.Load() != 0 {
					t.Fatalf("the request was sent again to the second replica")
				}
				if tc.wantStatus != 0 {
					if err != nil || resp.StatusCode != tc.wantStatus || !strings.Contains(got, `"code"`) {
						t.Fatalf("want the first replica's %d answer intact, got %v %v %q", tc.wantStatus, resp, err, got)
					}
				} else if err == nil {
					t.Fatalf("want an error, got %d %q", resp.StatusCode, got)
				}
				if tr.Current() != first.URL {
					t.Fatalf("sticky replica moved to %s", tr.Current())
				}
			}
			if hit := first.hits.Load() > 0; hit != tc.wantFirstHit {
				t.Fatalf("first replica hit=%v, want %v", hit, tc.wantFirstHit)
			}
		})
	}
}

// TestStickyAcrossRequests: once a replica answered, later requests go to
// it first; the dead and the quorum-less ones are not asked again.
func TestStickyAcrossRequests(t *testing.T) {
	dead, noq, ok := closedPort(t), unavailable(t, CodeNoQuorum), good(t, "ok")
	var switches []string
	c, tr := client(t, nil, dead, noq, ok)
	tr.OnSwitch = func(from, to string) { switches = append(switches, from+">"+to) }
	for i := range 5 {
		resp, got, err := send(t, c, "GET", dead.URL+"/v1/vms", "", "")
		if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(got, "ok ") {
			t.Fatalf("request %d: %v %v %q", i, resp, err, got)
		}
	}
	if noq.hits.Load() != 1 || ok.hits.Load() != 5 {
		t.Fatalf("no_quorum replica asked %d times, good one %d", noq.hits.Load(), ok.hits.Load())
	}
	if len(switches) != 1 || switches[0] != dead.URL+">"+ok.URL {
		t.Fatalf("switches %v", switches)
	}
	// A new list that still holds the sticky replica keeps it.
	other := good(t, "other")
	if err := tr.SetServers([]string{other.URL, ok.URL}); err != nil {
		t.Fatal(err)
	}
	if tr.Current() != ok.URL {
		t.Fatalf("current %s after a refresh", tr.Current())
	}
}

// TestAllFail: the error names every replica tried and unwraps to the last
// cause; a 503 no_quorum from every replica comes back as that answer.
func TestAllFail(t *testing.T) {
	a, b := closedPort(t), closedPort(t)
	c, _ := client(t, nil, a, b)
	_, _, err := send(t, c, "GET", a.URL+"/x", "", "")
	var fe *Error
	if !errors.As(err, &fe) || len(fe.Attempts) != 2 || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(err.Error(), a.URL) || !strings.Contains(err.Error(), b.URL) {
		t.Fatalf("error does not name both replicas: %v", err)
	}

	n1, n2 := unavailable(t, CodeNoQuorum), unavailable(t, CodeNoQuorum)
	c, _ = client(t, nil, n1, n2)
	resp, got, err := send(t, c, "GET", n1.URL+"/x", "", "")
	if err != nil || resp.StatusCode != 503 || !strings.Contains(got, "no_quorum") {
		t.Fatalf("%v %v %q", resp, err, got)
	}
	if n1.hits.Load() != 1 || n2.hits.Load() != 1 {
		t.Fatalf("hits %d %d", n1.hits.Load(), n2.hits.Load())
	}
}

// TestTLSHandshakeToDeadHost: a host that accepts TCP and hangs up before
// the TLS handshake completes got no request; even a POST moves on.
func TestTLSHandshakeToDeadHost(t *testing.T) {
	dead := hangup(t)
	var hits atomic.Int64
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "tls ok")
	}))
	t.Cleanup(s.Close)
	base := s.Client().Transport.(*http.Transport).Clone()
	c, _ := client(t, base, dead, &replica{URL: s.URL})
	resp, got, err := send(t, c, "POST", dead.URL+"/v1/x", "{}", "")
	if err != nil || resp.StatusCode != 200 || got != "tls ok" || hits.Load() != 1 {
		t.Fatalf("%v %v %q", resp, err, got)
	}
	if dead.hits.Load() == 0 {
		t.Fatal("the dead host was not tried")
	}
}

// TestCallerDeadlineStops: when the caller's context ends no other replica
// is tried.
func TestCallerDeadlineStops(t *testing.T) {
	slow := &replica{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slow.hits.Add(1)
		<-r.Context().Done()
	}))
	t.Cleanup(s.Close)
	slow.URL = s.URL
	next := good(t, "next")
	tr, err := New(&http.Transport{}, urls(slow, next))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr, Timeout: 300 * time.Millisecond}
	if _, _, err := send(t, c, "GET", slow.URL+"/x", "", ""); err == nil {
		t.Fatal("want a timeout")
	}
	if next.hits.Load() != 0 {
		t.Fatal("a request past its deadline went on to the next replica")
	}
}

func TestParseServers(t *testing.T) {
	us, err := ParseServers([]string{"https://a:1/", " https://A:1", "", "http://b"})
	if err != nil || len(us) != 2 || us[0].String() != "https://a:1" || us[1].String() != "http://b" {
		t.Fatalf("%v %v", us, err)
	}
	for _, bad := range [][]string{nil, {""}, {"ftp://a"}, {"https://a/path"}, {"a:1"}, {"https://u:p@a"}} {
		if _, err := ParseServers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	many := make([]string, MaxServers+1)
	for i := range many {
		many[i] = "https://h" + strings.Repeat("x", i) + ":1"
	}
	if _, err := ParseServers(many); err == nil {
		t.Error("more than MaxServers accepted")
	}
}

// TestRoundsRetryAfterAPause: with Rounds, a list that failed whole is
// tried again after a pause: a replica that answers 503 during an election
// and then recovers takes the request in the second round.
func TestRoundsRetryAfterAPause(t *testing.T) {
	var calls atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"code":"unavailable","message":"leader changed","details":{}}}`)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	dead := closedPort(t)
	tr, err := New(&http.Transport{}, []string{dead.URL, s.URL})
	if err != nil {
		t.Fatal(err)
	}
	tr.Rounds, tr.Backoff = 3, 20*time.Millisecond
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	// A POST that never connected, then got 503 not from not_ready: it may
	// have been proposed, so it is not sent again in a later round.
	resp, got, err := send(t, c, "POST", dead.URL+"/x", "{}", "")
	if err != nil || resp.StatusCode != 503 || calls.Load() != 1 {
		t.Fatalf("POST: %v %v %q, %d calls", resp, err, got, calls.Load())
	}
	calls.Store(0)
	resp, got, err = send(t, c, "GET", dead.URL+"/x", "", "")
	if err != nil || resp.StatusCode != 200 || got != "ok" || calls.Load() != 2 {
		t.Fatalf("GET: %v %v %q, %d calls", resp, err, got, calls.Load())
	}
	// Every round refused: the error lists each attempt.
	d2 := closedPort(t)
	tr2, _ := New(&http.Transport{}, []string{dead.URL, d2.URL})
	tr2.Rounds, tr2.Backoff = 2, 10*time.Millisecond
	_, _, err = send(t, &http.Client{Transport: tr2}, "POST", dead.URL+"/x", "{}", "")
	var fe *Error
	if !errors.As(err, &fe) || len(fe.Attempts) != 4 {
		t.Fatalf("err %v", err)
	}
}

// TestHedgedWrite: a keyed write that one replica holds without an answer
// (a follower whose proposal went to a dead leader) is sent to the next
// replica as well after HedgeAfter; the first real answer wins and the held
// attempt is cancelled. A 409 idempotency_in_progress from the second (the
// first holds the key) waits for the first. Writes without a key and reads
// are never hedged.
func TestHedgedWrite(t *testing.T) {
	held := make(chan struct{})
	var slowHits, slowCancelled atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		io.ReadAll(r.Body) // the server notices a gone client once the body is read
		select {
		case <-r.Context().Done():
			slowCancelled.Add(1)
		case <-held:
			io.WriteString(w, "slow")
		}
	}))
	t.Cleanup(func() { close(held); slow.Close() })
	fast := good(t, "fast")
	tr, err := New(&http.Transport{}, []string{slow.URL, fast.URL})
	if err != nil {
		t.Fatal(err)
	}
	tr.HedgeAfter = 100 * time.Millisecond
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	began := time.Now()
	resp, got, err := send(t, c, "POST", slow.URL+"/v1/networks", `{"n":1}`, "k1")
	if err != nil || resp.StatusCode != 200 || got != "fast POST /v1/networks" {
		t.Fatalf("%v %v %q", resp, err, got)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("hedged write took %s", d)
	}
	if fast.bodies[0] != `{"n":1}` || tr.Current() != fast.URL {
		t.Fatalf("body %q, current %s", fast.bodies[0], tr.Current())
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "the held attempt cancelled", func() bool { return slowCancelled.Load() == 1 })

	// Without a key, or a read: no hedge, the slow answer (or the
	// caller's timeout) is what comes back.
	tr2, _ := New(&http.Transport{}, []string{slow.URL, fast.URL})
	tr2.HedgeAfter = 50 * time.Millisecond
	c2 := &http.Client{Transport: tr2, Timeout: 400 * time.Millisecond}
	before := fast.hits.Load()
	for _, m := range []struct{ method, key string }{{"POST", ""}, {"GET", ""}} {
		if _, _, err := send(t, c2, m.method, slow.URL+"/x", "", m.key); err == nil {
			t.Fatalf("%s %q: want the caller's timeout", m.method, m.key)
		}
	}
	if fast.hits.Load() != before {
		t.Fatal("a request without a key, or a read, was hedged")
	}

	// The second replica answers 409 in progress (the first holds the
	// key); the first then answers: its answer is the result.
	// The holder runs a key once, as the API does: a repeat while the
	// first runs is 409 in progress.
	var first atomic.Int64
	holder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if first.Add(1) > 1 {
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error":{"code":"idempotency_in_progress","message":"running","details":{}}}`)
			return
		}
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "created once")
	}))
	t.Cleanup(holder.Close)
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"error":{"code":"idempotency_in_progress","message":"running","details":{}}}`)
	}))
	t.Cleanup(busy.Close)
	tr3, _ := New(&http.Transport{}, []string{holder.URL, busy.URL})
	tr3.HedgeAfter = 50 * time.Millisecond
	resp, got, err = send(t, &http.Client{Transport: tr3, Timeout: 5 * time.Second}, "POST", holder.URL+"/x", "{}", "k2")
	if err != nil || resp.StatusCode != http.StatusCreated || got != "created once" {
		t.Fatalf("%v %v %q", resp, err, got)
	}
}
