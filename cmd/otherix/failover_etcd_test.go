//go:build etcd

package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCLIFailsOver: a context whose server refuses connections, then has a
// replica answering 503 no_quorum, then a working one: reads and writes
// (the CLI sends every write with an Idempotency-Key) reach the working
// replica, the switch is noted on stderr, and the config keeps the list.
func TestCLIFailsOver(t *testing.T) {
	good := startAPI(t)
	c := newCLI(t, good)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	var noQuorumHits, refreshes atomic.Int64
	var refusesToken atomic.Bool // phase 2: a replica that checks tokens, but cannot refresh
	nq := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noQuorumHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if refusesToken.Load() && r.URL.Path != "/v1/auth/refresh" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthenticated","message":"bad token","details":{}}}`))
			return
		}
		if r.URL.Path == "/v1/auth/refresh" {
			refreshes.Add(1)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"no_quorum","message":"this replica lost quorum","details":{}}}`))
	}))
	t.Cleanup(nq.Close)

	cfg, err := loadConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cx := cfg.context(cfg.CurrentContext)
	cx.Server, cx.Servers = dead, []string{dead, nq.URL, good}
	if err := saveConfig(c.cfg, cfg); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := c.run("network", "create", "fo-a", "--cidr", "10.77.0.0/24")
	if code != 0 || !strings.Contains(out, "network/fo-a created") {
		t.Fatalf("create through failover: exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "note: "+dead+" did not answer (in time); using replica "+good) {
		t.Fatalf("switch not noted: %q", stderr)
	}
	if noQuorumHits.Load() != 1 {
		t.Fatalf("the no_quorum replica saw %d requests", noQuorumHits.Load())
	}
	if out := c.ok("network", "list"); !strings.Contains(out, "fo-a") {
		t.Fatalf("list: %s", out)
	}
	if out := c.ok("whoami"); !strings.Contains(out, good) {
		t.Fatalf("whoami does not name the replica in use: %s", out)
	}
	if out := c.ok("config", "view"); !strings.Contains(out, "servers:") || !strings.Contains(out, nq.URL) {
		t.Fatalf("config view: %s", out)
	}
	// --server naming one of the context's replicas keeps its credentials.
	if out := c.ok("--server", good, "whoami"); !strings.Contains(out, adminEmail) || !strings.Contains(out, good) {
		t.Fatalf("--server a replica: %s", out)
	}

	// An access token the replicas refuse: the second replica answers the
	// list with 401, then 503 no_quorum to the session refresh (a POST
	// without a key, safe to repeat thanks to the refresh grace), which goes
	// on to the third; the list is sent again and works.
	refusesToken.Store(true)
	cfg, err = loadConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cx = cfg.context(cfg.CurrentContext)
	oldRefresh := cx.RefreshToken
	cx.AccessToken = "not-a-valid-jwt"
	if err := saveConfig(c.cfg, cfg); err != nil {
		t.Fatal(err)
	}
	before := noQuorumHits.Load()
	if code, out, stderr := c.run("network", "list"); code != 0 || !strings.Contains(out, "fo-a") {
		t.Fatalf("list after a refresh through failover: exit %d\n%s\n%s", code, out, stderr)
	}
	if noQuorumHits.Load() == before || refreshes.Load() != 1 {
		t.Fatalf("the refresh did not meet the replica without quorum (%d refreshes there)", refreshes.Load())
	}
	cfg, _ = loadConfig(c.cfg)
	if cx := cfg.context(cfg.CurrentContext); cx.RefreshToken == oldRefresh || cx.AccessToken == "not-a-valid-jwt" {
		t.Fatal("the refreshed session was not saved")
	}
}
