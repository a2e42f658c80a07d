//go:build etcd

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// noQuorumBound is the documented bound for a replica that lost its
// majority to answer no_quorum (docs/ha.md, "Without quorum"): etcd's
// election timeout (1 s, randomized up to 2 s) and the 50 ms poll. The
// test allows slack for the race detector on a busy machine.
const (
	noQuorumBound = 3 * time.Second
	noQuorumSlack = 2 * time.Second
)

// TestMinorityAnswersNoQuorum runs three replicas in this process, through
// run() as the binary does. With two of them stopped, a write through the
// third answers 503 no_quorum within the bound rather than hanging for
// etcd's request timeout, and so does every later request, at once; its
// /readyz names the reason. With one of the two started again, writes
// through the third succeed without anything done to it.
func TestMinorityAnswersNoQuorum(t *testing.T) {
	c := startThree(t)
	r1, r2, r3, conf, dirs := c.r[0], c.r[1], c.r[2], c.conf, c.dirs
	_, _, admin3 := r3.login(t)
	if status, code, body := r3.call(t, "POST", "/v1/networks", admin3, map[string]string{"name": "q-a", "cidr": "10.93.1.0/24"}); status != http.StatusCreated {
		t.Fatalf("write through r3 with three replicas: %d %s %s", status, code, body)
	}

	// A watch stream open on the third through the outage.
	stream := watchLines(t, r3.url+"/v1/watch?types=networks", admin3)

	if err := r1.stop(); err != nil {
		t.Fatalf("stop r1: %v", err)
	}
	if err := r2.stop(); err != nil {
		t.Fatalf("stop r2: %v", err)
	}
	start := time.Now()
	status, code, body := r3.call(t, "POST", "/v1/networks", admin3, map[string]string{"name": "q-b", "cidr": "10.93.2.0/24"})
	first := time.Since(start)
	t.Logf("first write through the minority replica answered %d %s after %s", status, code, first.Round(time.Millisecond))
	if status != http.StatusServiceUnavailable || code != "no_quorum" {
		t.Fatalf("write without quorum: %d %s %s; want 503 no_quorum", status, code, body)
	}
	if first > noQuorumBound+noQuorumSlack {
		t.Fatalf("no_quorum after %s; the bound is %s", first, noQuorumBound)
	}
	// Once the loss is seen, every request that needs the store is
	// refused at once, reads included.
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/networks"}, {"GET", "/v1/networks"}, {"GET", "/v1/vms"}, {"POST", "/v1/auth/login"},
	} {
		start := time.Now()
		status, code, body := r3.call(t, c.method, c.path, admin3, map[string]string{"name": "q-c", "cidr": "10.93.3.0/24"})
		if took := time.Since(start); status != http.StatusServiceUnavailable || code != "no_quorum" || took > time.Second {
			t.Fatalf("%s %s without quorum: %d %s after %s (%s); want 503 no_quorum at once", c.method, c.path, status, code, took, body)
		}
	}
	status, code, body = r3.call(t, "GET", "/readyz", "", nil)
	var env struct {
		Error struct {
			Details struct{ Reason string }
		}
	}
	_ = json.Unmarshal(body, &env)
	if status != http.StatusServiceUnavailable || code != "not_ready" || env.Error.Details.Reason != "no_quorum" {
		t.Fatalf("/readyz without quorum: %d %s %s; want 503 not_ready, reason no_quorum", status, code, body)
	}
	if status, _, _ := r3.call(t, "GET", "/healthz", "", nil); status != http.StatusOK {
		t.Fatalf("/healthz without quorum: %d; the process is alive", status)
	}

	// One replica back: the third takes writes again by itself.
	r1 = startRun(t, dirs[0], conf(0, "", ""))
	var last string
	if !testutil.Until(30*time.Second, 100*time.Millisecond, func() bool {
		status, code, _ := r3.call(t, "POST", "/v1/networks", admin3, map[string]string{"name": "q-d", "cidr": "10.93.4.0/24"})
		last = fmt.Sprintf("%d %s", status, code)
		return status == http.StatusCreated
	}) {
		t.Fatalf("writes through r3 after r1 came back: last %s", last)
	}
	if status, _, _ := r3.call(t, "GET", "/readyz", "", nil); status != http.StatusOK {
		t.Fatalf("/readyz after recovery: %d", status)
	}
	// The stream open through the outage was told to list again, rather
	// than going quiet while a majority elsewhere could have moved on.
	resynced := false
	deadline := time.After(30 * time.Second)
	for !resynced {
		select {
		case l, ok := <-stream:
			if !ok {
				t.Fatal("the watch stream ended without a resync")
			}
			resynced = l == "event: resync"
		case <-deadline:
			t.Fatal("the watch stream open through the outage was not told to resync")
		}
	}
	// Streams are fed again once the hub has restarted its watch: a stream
	// opened before that is told to resync, as a client that meets a
	// resync opens another.
	fed := func(i int) bool {
		stream := watchLines(t, r3.url+"/v1/watch?types=networks", admin3)
		name := fmt.Sprintf("q-e%d", i)
		if status, code, body := r3.call(t, "POST", "/v1/networks", admin3, map[string]string{"name": name, "cidr": fmt.Sprintf("10.93.%d.0/24", 10+i)}); status != http.StatusCreated {
			t.Fatalf("write after recovery: %d %s %s", status, code, body)
		}
		for {
			select {
			case l, ok := <-stream:
				if !ok || l == "event: resync" {
					return false
				}
				if strings.Contains(l, `"`+name+`"`) {
					return true
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a watch stream after the recovery neither carried a write nor ended")
			}
		}
	}
	for i := 0; !fed(i); i++ {
		if i == 10 {
			t.Fatal("no watch stream after the recovery carried a write")
		}
	}
	if status, code, _ := r1.call(t, "GET", "/v1/networks/q-d", admin3, nil); status != http.StatusOK {
		t.Fatalf("read through r1 of the write after recovery: %d %s", status, code)
	}
}

// threeReplicas are three replicas of one cluster run in this process.
type threeReplicas struct {
	r    [3]*apiRun
	dirs []string
	// conf is replica i's extra configuration (peer listener, name, join).
	conf func(i int, join, token string) string
	// admin is an admin's access token from the first replica.
	admin string
}

// startThree starts a first replica and joins two more to it, as an
// operator does with replica join tokens.
func startThree(t *testing.T) *threeReplicas {
	t.Helper()
	base := t.TempDir()
	peers := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	conf := func(i int, join, token string) string {
		y := fmt.Sprintf("peer_listen: %s\netcd:\n  name: r%d\n", peers[i], i+1)
		if join != "" {
			y += fmt.Sprintf("join: https://%s\njoin_token: %q\n", join, token)
		}
		return y
	}
	dirs := []string{filepath.Join(base, "r1"), filepath.Join(base, "r2"), filepath.Join(base, "r3")}
	r1 := startRun(t, dirs[0], conf(0, "", ""))
	status, code, admin := r1.login(t)
	if status != http.StatusOK {
		t.Fatalf("login: %d %s", status, code)
	}
	tokenFor := func() string {
		status, code, body := r1.call(t, "POST", "/v1/cluster/join-tokens", admin, map[string]string{"kind": "replica"})
		if status != http.StatusCreated {
			t.Fatalf("replica join token: %d %s %s", status, code, body)
		}
		var tok struct{ Token string }
		_ = json.Unmarshal(body, &tok)
		return tok.Token
	}
	// The second replica is a learner, not ready, until the third joins.
	wait2 := launchRun(t, dirs[1], conf(1, r1.agent, tokenFor()))
	// The third joins once the second's member runs: a joiner refuses a
	// membership listing a learner that has not started.
	if !testutil.Until(time.Minute, 100*time.Millisecond, func() bool {
		_, _, body := r1.call(t, "GET", "/v1/cluster/members", admin, nil)
		var l struct{ Items []struct{ Name string } }
		_ = json.Unmarshal(body, &l)
		for _, m := range l.Items {
			if m.Name == "r2" {
				return true
			}
		}
		return false
	}) {
		t.Fatal("r2 never started as a learner")
	}
	wait3 := launchRun(t, dirs[2], conf(2, r1.agent, tokenFor()))
	r2, r3 := wait2(), wait3()
	return &threeReplicas{r: [3]*apiRun{r1, r2, r3}, dirs: dirs, conf: conf, admin: admin}
}

// watchLines opens a watch stream and sends its lines until it ends.
func watchLines(t *testing.T, url, token string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %d", resp.StatusCode)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
