//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The chaos tests run three real replicas started by joins, as
// TestReplicasJoinAndFailover does, and a client of their own that picks a
// replica per request and retries by itself. No agent runs: VMs are
// created, updated, stopped and deleted as control-plane records. With
// OTHERIX_JOBS__ATTEMPTS=1 a create's job fails at its first attempt (no
// node: no_schedulable_node), which frees the VM for the next task, and a
// stop or a delete of a VM that was never placed ends at once.

// chaosEnv is what every replica of a chaos cluster runs with.
var chaosEnv = []string{"OTHERIX_JOBS__ATTEMPTS=1"}

// chaosDuration is how long a chaos test drives load: def in CI,
// OTHERIX_CHAOS_DURATION under make chaos.
func chaosDuration(t *testing.T, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv("OTHERIX_CHAOS_DURATION")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("OTHERIX_CHAOS_DURATION=%q: want a duration such as 10m", v)
	}
	return d
}

// chaosCluster is three replicas and one client for all of them: they
// share the cluster CA, and an access token from one is good on every one
// (the signing key is in etcd).
type chaosCluster struct {
	// t is the test (or subtest) the cluster reports to; root is the test
	// that started it, which owns every process it starts.
	t, root *testing.T
	rs      []*replica
	http    *http.Client
	mu      sync.Mutex
	// token is the admin's access token.
	token string
}

func startChaosCluster(t *testing.T) *chaosCluster {
	t.Helper()
	base := t.TempDir()
	c := &chaosCluster{t: t, root: t}
	for _, name := range []string{"otherix", "r2", "r3"} {
		c.rs = append(c.rs, &replica{name: name, dataDir: filepath.Join(base, name), rest: freePort(t), agent: freePort(t),
			peer: freePort(t), env: chaosEnv})
	}
	first := c.rs[0]
	startReplica(t, first, "", "")
	waitFor(t, "replica 1 ready", 90*time.Second, func() bool { return readyz(first) == http.StatusOK }, first)
	c.http = caClient(filepath.Join(first.dataDir, "pki", "ca.pem"))
	c.login()
	for _, r := range c.rs[1:] {
		var tok struct {
			Token string `json:"token"`
		}
		if st, _, err := c.do(context.Background(), first, "POST", "/v1/cluster/join-tokens", map[string]string{"kind": "replica"}, nil, &tok); err != nil || st != http.StatusCreated {
			t.Fatalf("replica join token: %d %v", st, err)
		}
		startReplica(t, r, first.AgentURL, tok.Token)
		// One join at a time, as an operator would: the next waits until
		// this one is a member.
		waitFor(t, r.name+" listed as a member", 90*time.Second, func() bool {
			for _, m := range c.members(first) {
				if m.Name == r.name {
					return true
				}
			}
			return false
		}, first, r)
	}
	c.waitAllReady("replicas 2 and 3 ready")
	waitFor(t, "three healthy voters", 90*time.Second, func() bool {
		n := 0
		for _, m := range c.members(first) {
			if m.Role == "voter" && m.Healthy {
				n++
			}
		}
		return n == 3
	}, c.rs...)
	return c
}

// login gets the admin an access token from any replica that answers.
func (c *chaosCluster) login() {
	c.t.Helper()
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	waitFor(c.t, "a login", 60*time.Second, func() bool {
		for _, r := range c.rs {
			if r.apiProcess == nil {
				continue
			}
			st, _, err := c.do(context.Background(), r, "POST", "/v1/auth/login",
				map[string]string{"email": adminEmail, "password": adminPassword}, nil, &pair)
			if err == nil && st == http.StatusOK && pair.AccessToken != "" {
				c.mu.Lock()
				c.token = pair.AccessToken
				c.mu.Unlock()
				return true
			}
		}
		return false
	})
}

// do sends one request to r with the admin's token and decodes a 2xx
// answer into out; code is the error envelope's code of any other answer.
// A request that got no answer returns err.
func (c *chaosCluster) do(ctx context.Context, r *replica, method, path string, body any, hdr map[string]string, out any) (status int, code string, err error) {
	return c.doRaw(ctx, r, method, path, body, hdr, out, nil)
}

// doRaw is do that also decodes an error answer's body into errOut.
func (c *chaosCluster) doRaw(ctx context.Context, r *replica, method, path string, body any, hdr map[string]string, out, errOut any) (status int, code string, err error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, "", err
		}
		rd = bytes.NewReader(b)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+r.rest+path, rd)
	if err != nil {
		return 0, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.mu.Lock()
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	c.mu.Unlock()
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode/100 == 2 {
		if out != nil && len(data) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				return 0, "", fmt.Errorf("%s %s: decode %q: %w", method, path, data, err)
			}
		}
		return resp.StatusCode, "", nil
	}
	var env struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &env)
	if errOut != nil {
		_ = json.Unmarshal(data, errOut)
	}
	return resp.StatusCode, env.Error.Code, nil
}

// notDelivered reports an answer that proves the request did nothing: the
// connection was refused (the replica is down), or a replica that serves
// nothing yet refused it.
func notDelivered(status int, code string, err error) bool {
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	return status == http.StatusServiceUnavailable && code == "not_ready"
}

func (c *chaosCluster) members(via *replica) []member {
	var l struct {
		Items []member `json:"items"`
	}
	if st, _, err := c.do(context.Background(), via, "GET", "/v1/cluster/members", nil, nil, &l); err != nil || st != http.StatusOK {
		return nil
	}
	return l.Items
}

// running reports whether r's process is alive.
func running(r *replica) bool {
	if r.apiProcess == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// leader is the replica the running ones name as the Raft leader, nil while
// they name none.
func (c *chaosCluster) leader() *replica {
	for _, via := range c.rs {
		if !running(via) {
			continue
		}
		for _, m := range c.members(via) {
			if !m.IsLeader {
				continue
			}
			for _, r := range c.rs {
				if r.name == m.Name && running(r) {
					return r
				}
			}
		}
	}
	return nil
}

// waitLoopOwner waits until a running replica is listed as the owner of
// the periodic loops, and returns it.
func (c *chaosCluster) waitLoopOwner() *replica {
	c.t.Helper()
	var o *replica
	waitFor(c.t, "a loop owner", 60*time.Second, func() bool {
		for _, via := range c.rs {
			if !running(via) {
				continue
			}
			for _, m := range c.members(via) {
				for _, r := range c.rs {
					if m.LoopOwner && r.name == m.Name && running(r) {
						o = r
						return true
					}
				}
			}
		}
		return false
	})
	return o
}

// waitLeader waits until the replicas agree on a running leader.
func (c *chaosCluster) waitLeader() *replica {
	c.t.Helper()
	var l *replica
	waitFor(c.t, "a leader", 60*time.Second, func() bool { l = c.leader(); return l != nil })
	return l
}

// follower is a running replica that is not the leader.
func (c *chaosCluster) follower(rng *rand.Rand) *replica {
	c.t.Helper()
	l := c.waitLeader()
	for range 1000 {
		r := c.rs[rng.IntN(len(c.rs))]
		if r != l && running(r) {
			return r
		}
	}
	c.t.Fatal("no follower running")
	return nil
}

// restart starts a stopped or killed replica again on its data dir and
// waits until it serves.
func (c *chaosCluster) restart(r *replica) {
	c.t.Helper()
	startReplica(c.root, r, "", "")
	waitFor(c.t, r.name+" ready again", 120*time.Second, func() bool { return readyz(r) == http.StatusOK }, r)
}

func (c *chaosCluster) waitAllReady(what string) {
	c.t.Helper()
	waitFor(c.t, what, 120*time.Second, func() bool {
		for _, r := range c.rs {
			if readyz(r) != http.StatusOK {
				return false
			}
		}
		return true
	}, c.rs...)
}

// pause waits d or until ctx ends: the fault schedule's pacing.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// vmBody is a create request for name.
func vmBody(name string) map[string]any {
	return map[string]any{"name": name, "spec": map[string]any{"cpus": 1,
		"image": map[string]any{"url": "https://images.example/debian-12.qcow2"}}}
}

// vmAnswer is the part of a VM, or of a 202 with a VM, the tests read.
type vmAnswer struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Spec struct {
		CPUs int `json:"cpus"`
	} `json:"spec"`
}

type acceptedVM struct {
	Task task     `json:"task"`
	VM   vmAnswer `json:"vm"`
}

// waitTaskEnd follows a task through any replica until it ends or within
// passes; it answers the last state seen ("" if none).
func (c *chaosCluster) waitTaskEnd(id string, within time.Duration, rng *rand.Rand) string {
	deadline := time.Now().Add(within)
	state := ""
	for time.Now().Before(deadline) {
		r := c.rs[rng.IntN(len(c.rs))]
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var tk task
		st, _, err := c.do(ctx, r, "GET", "/v1/tasks/"+id+"?wait=10s", nil, nil, &tk)
		cancel()
		if err == nil && st == http.StatusOK {
			state = tk.State
			if tk.State == "success" || tk.State == "failed" || tk.State == "cancelled" {
				return state
			}
		} else {
			time.Sleep(100 * time.Millisecond) // another replica next; not synchronization
		}
	}
	return state
}
