//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// replica is one otherix-api of a replicated control plane, with the
// addresses it keeps across restarts.
type replica struct {
	*apiProcess
	name, dataDir, rest, agent, peer string
	// env holds more OTHERIX_ settings for every start.
	env []string
}

// startReplica starts otherix-api with a peer listener; join, when set, is
// an existing replica's agent URL and token its replica join token; env
// adds OTHERIX_ settings. It does not wait for /readyz: a joiner stays a
// learner (503) until there are three replicas.
func startReplica(t *testing.T, r *replica, join, token string, env ...string) {
	t.Helper()
	args := []string{"--data-dir", r.dataDir, "--listen", r.rest, "--agent-listen", r.agent, "--peer-listen", r.peer}
	if r.name != "otherix" {
		args = append(args, "--name", r.name)
	}
	if join != "" {
		args = append(args, "--join", join, "--join-token", token)
	}
	cmd := exec.Command(filepath.Join(binDir(t), "otherix-api"), args...)
	cmd.Env = append(os.Environ(), "OTHERIX_ADMIN__EMAIL="+adminEmail, "OTHERIX_ADMIN__PASSWORD="+adminPassword,
		"OTHERIX_LOG__LEVEL=warn")
	cmd.Env = append(cmd.Env, r.env...)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", r.name, err)
	}
	p := &apiProcess{t: t, cmd: cmd, URL: "https://" + r.rest, AgentURL: "https://" + r.agent, stderr: &out, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", r.name, out.String())
		}
	})
	r.apiProcess = p
}

// readyz answers the status of a replica's /readyz, 0 when it does not
// answer, without failing the test.
func readyz(r *replica) int {
	client := caClient(filepath.Join(r.dataDir, "pki", "ca.pem"))
	if client == nil {
		return 0
	}
	defer client.CloseIdleConnections()
	// A learner answers TLS with its peer certificate, of the same CA.
	client.Timeout = 3 * time.Second
	resp, err := client.Get(r.URL + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool, rs ...*replica) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		for _, r := range rs {
			select {
			case <-r.done:
				t.Fatalf("%s exited while waiting for %s: %v\n%s", r.name, what, r.waitErr, r.stderr.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryCall is call without failing the test on a transport error: during a
// failover requests may time out.
func tryCall(method, target string, body any) (int, error) {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok, ok := bearers.Load(req.URL.Host); ok {
		req.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	client, ok := clients.Load(req.URL.Host)
	if !ok {
		return 0, fmt.Errorf("no client for %s", req.URL.Host)
	}
	resp, err := client.(*http.Client).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

type member struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	IsLeader bool   `json:"is_leader"`
	Healthy  bool   `json:"healthy"`
	APIURL   string `json:"api_url"`
	AgentURL string `json:"agent_url"`
	PeerURL  string `json:"peer_url"`
	ID       string `json:"id"`
	// LoopOwner marks the replica running the cluster-wide loops.
	LoopOwner bool `json:"loop_owner"`
	// RaftIndexLag, Version and EtcdVersion are checked by
	// TestRemoveRunningReplica.
	RaftIndexLag *uint64 `json:"raft_index_lag"`
	Version      string  `json:"version"`
	EtcdVersion  string  `json:"etcd_version"`
}

// haCluster is a replicated control plane of real otherix-api processes
// and a CLI config logged in to them.
type haCluster struct {
	t      *testing.T
	base   string
	rs     []*replica
	cliEnv []string
}

// newHACluster lays out replicas named names (the first is the one that
// creates the cluster) on free loopback ports; nothing is started.
func newHACluster(t *testing.T, names ...string) *haCluster {
	base := t.TempDir()
	h := &haCluster{t: t, base: base, cliEnv: append(os.Environ(), "OTHERIX_CONFIG="+filepath.Join(base, "cli.yaml"))}
	for _, name := range names {
		h.rs = append(h.rs, &replica{name: name, dataDir: filepath.Join(base, name), rest: freePort(t), agent: freePort(t), peer: freePort(t)})
	}
	return h
}

// cli runs the otherix CLI with the cluster's config.
func (h *haCluster) cli(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir(h.t), "otherix"), args...)
	cmd.Env = h.cliEnv
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("otherix %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// members lists the members through via, nil when it does not answer.
func (h *haCluster) members(via *replica) []member {
	out, err := h.cli("--context", via.rest, "--timeout", "5s", "cluster", "members", "-o", "json")
	if err != nil {
		return nil
	}
	var l struct{ Items []member }
	if json.Unmarshal([]byte(out), &l) != nil {
		return nil
	}
	return l.Items
}

// loopOwners names the replicas via lists as running the loops.
func (h *haCluster) loopOwners(via *replica) []string {
	var out []string
	for _, m := range h.members(via) {
		if m.LoopOwner {
			out = append(out, m.Name)
		}
	}
	return out
}

func (h *haCluster) healthyVoters(via *replica) int {
	n := 0
	for _, m := range h.members(via) {
		if m.Role == "voter" && m.Healthy {
			n++
		}
	}
	return n
}

// ready marks a replica as serving: its REST client trusts the cluster
// CA, the harness and the CLI are logged in to it.
func (h *haCluster) ready(r *replica) {
	t := h.t
	t.Helper()
	clients.Store(r.rest, caClient(filepath.Join(r.dataDir, "pki", "ca.pem")))
	login(t, r.URL)
	cmd := exec.Command(filepath.Join(binDir(t), "otherix"), "login", r.URL, "--user", adminEmail, "--password-stdin",
		"--ca-fingerprint", caFingerprint(t, filepath.Join(r.dataDir, "pki", "ca.pem")))
	cmd.Env = h.cliEnv
	cmd.Stdin = strings.NewReader(adminPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("otherix login %s: %v\n%s", r.name, err, out)
	}
}

// replicaToken creates a replica join token through via.
func (h *haCluster) replicaToken(via *replica) string {
	h.t.Helper()
	token, err := h.cli("--context", via.rest, "cluster", "join-token", "create", "--replica")
	if err != nil {
		h.t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	if !strings.HasPrefix(token, "otxr_") {
		h.t.Fatalf("replica token %q", token)
	}
	return token
}

// startAll starts the first replica, joins the others through it and
// waits until every one serves and the first lists them all as healthy
// voters.
func (h *haCluster) startAll() {
	t := h.t
	t.Helper()
	startReplica(t, h.rs[0], "", "")
	waitFor(t, h.rs[0].name+" ready", 60*time.Second, func() bool { return readyz(h.rs[0]) == http.StatusOK }, h.rs[0])
	h.ready(h.rs[0])
	for _, r := range h.rs[1:] {
		startReplica(t, r, h.rs[0].AgentURL, h.replicaToken(h.rs[0]))
		// The next joiner reads the membership from any peer: this one
		// must have started its member (it is named) first.
		waitFor(t, r.name+" listed", 60*time.Second, func() bool {
			for _, m := range h.members(h.rs[0]) {
				if m.Name == r.name {
					return true
				}
			}
			return false
		}, h.rs[0], r)
	}
	waitFor(t, "every replica ready", 120*time.Second, func() bool {
		for _, r := range h.rs[1:] {
			if readyz(r) != http.StatusOK {
				return false
			}
		}
		return true
	}, h.rs...)
	for _, r := range h.rs[1:] {
		h.ready(r)
	}
	waitFor(t, "every replica a healthy voter", 60*time.Second, func() bool { return h.healthyVoters(h.rs[0]) == len(h.rs) }, h.rs...)
}

// TestReplicasJoinAndFailover: three real replicas form one cluster by
// joins; a write through one is read through another; the leader killed
// with SIGKILL leaves two that still take writes; restarted, it rejoins.
func TestReplicasJoinAndFailover(t *testing.T) {
	h := newHACluster(t, "otherix", "r2", "r3")
	rs, cli, members, healthyVoters, ready := h.rs, h.cli, h.members, h.healthyVoters, h.ready
	base := h.base

	var spent string // a token a join has used
	startReplica(t, rs[0], "", "")
	waitFor(t, "replica 1 ready", 60*time.Second, func() bool { return readyz(rs[0]) == http.StatusOK }, rs[0])
	ready(rs[0])
	// Replicas 2 and 3 join through replica 1's agent listener; 2 stays a
	// learner, serving nothing, until 3 makes an odd number of voters.
	for i, r := range rs[1:] {
		token, err := cli("--context", rs[0].rest, "cluster", "join-token", "create", "--replica")
		if err != nil {
			t.Fatal(err)
		}
		token = strings.TrimSpace(token)
		if !strings.HasPrefix(token, "otxr_") {
			t.Fatalf("replica token %q", token)
		}
		startReplica(t, r, rs[0].AgentURL, token)
		spent = token
		if i == 0 {
			waitFor(t, "replica 2 listed as a learner", 60*time.Second, func() bool {
				for _, m := range members(rs[0]) {
					if m.Name == "r2" && m.Role == "learner" {
						return true
					}
				}
				return false
			}, rs[0], r)
			waitFor(t, "replica 2 answers 503 on /readyz", 30*time.Second, func() bool { return readyz(r) == http.StatusServiceUnavailable }, r)
			// A learner starts nothing: not even the agent listener.
			if c, err := net.DialTimeout("tcp", r.agent, time.Second); err == nil {
				c.Close()
				t.Fatal("a learner opened its agent listener")
			}
			// A learner killed and restarted comes back as a learner,
			// with the peer certificate of its join (--join is ignored).
			r.kill9()
			startReplica(t, r, rs[0].AgentURL, token)
			waitFor(t, "restarted learner answers 503 on /readyz", 30*time.Second, func() bool { return readyz(r) == http.StatusServiceUnavailable }, r)
		}
	}
	waitFor(t, "replicas 2 and 3 ready", 90*time.Second, func() bool {
		return readyz(rs[1]) == http.StatusOK && readyz(rs[2]) == http.StatusOK
	}, rs...)
	ready(rs[1])
	ready(rs[2])
	waitFor(t, "three healthy voters", 60*time.Second, func() bool { return healthyVoters(rs[0]) == 3 }, rs...)
	waitFor(t, "exactly one replica owning the loops", 30*time.Second, func() bool { return len(h.loopOwners(rs[2])) == 1 }, rs...)
	for _, m := range members(rs[2]) {
		r := map[string]*replica{"otherix": rs[0], "r2": rs[1], "r3": rs[2]}[m.Name]
		if r == nil || m.APIURL != r.URL || m.AgentURL != r.AgentURL || m.PeerURL != "https://"+r.peer {
			t.Fatalf("member %+v", m)
		}
	}

	// A fourth replica whose name is taken, whose token was used, or whose
	// token pins another CA exits before it starts a member, naming why;
	// nothing is added.
	fresh, err := cli("--context", rs[0].rest, "cluster", "join-token", "create", "--replica")
	if err != nil {
		t.Fatal(err)
	}
	fresh = strings.TrimSpace(fresh)
	head, _, _ := strings.Cut(fresh, "@")
	for i, c := range []struct{ name, token, want string }{
		{"r3", fresh, "replica_name_conflict"},
		{"r4", spent, "invalid_join_token"},
		{"r4", head + "@" + strings.Repeat("0", 64), "fingerprint"},
	} {
		r4 := &replica{name: c.name, dataDir: filepath.Join(base, fmt.Sprintf("bad%d", i)), rest: freePort(t), agent: freePort(t), peer: freePort(t)}
		startReplica(t, r4, rs[0].AgentURL, c.token)
		select {
		case <-r4.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("joiner %d still running\n%s", i, r4.stderr.String())
		}
		if out := r4.stderr.String(); r4.waitErr == nil || !strings.Contains(out, c.want) {
			t.Fatalf("joiner %d exit %v, want %q:\n%s", i, r4.waitErr, c.want, out)
		}
	}
	if n := len(members(rs[0])); n != 3 {
		t.Fatalf("refused joins changed the membership: %d members", n)
	}

	// A write through replica 2 is read through replica 3.
	if code := call(t, "POST", rs[1].URL+"/v1/networks", map[string]any{"name": "ha-a", "cidr": "10.91.0.0/24"}, nil); code != http.StatusCreated {
		t.Fatalf("create network via r2: %d", code)
	}
	if code := call(t, "GET", rs[2].URL+"/v1/networks/ha-a", nil, nil); code != http.StatusOK {
		t.Fatalf("read network via r3: %d", code)
	}

	// SIGKILL the leader: the two others elect a new one and take writes.
	var leader *replica
	var survivors []*replica
	for _, m := range members(rs[0]) {
		for _, r := range rs {
			if r.name == m.Name && m.IsLeader {
				leader = r
			}
		}
	}
	if leader == nil {
		t.Fatal("no leader listed")
	}
	for _, r := range rs {
		if r != leader {
			survivors = append(survivors, r)
		}
	}
	leader.kill9()
	killed := time.Now()
	for i, r := range survivors {
		name := fmt.Sprintf("ha-b%d", i)
		waitFor(t, "a write through "+r.name+" after the leader died", 60*time.Second, func() bool {
			code, err := tryCall("POST", r.URL+"/v1/networks", map[string]any{"name": name, "cidr": fmt.Sprintf("10.92.%d.0/24", i)})
			return err == nil && (code == http.StatusCreated || code == http.StatusConflict)
		}, survivors...)
	}
	t.Logf("leader %s killed: writes through both survivors after %s", leader.name, time.Since(killed).Round(time.Millisecond))
	// The loops' owner is a survivor within the owner TTL (10s), whether
	// or not the leader owned them.
	waitFor(t, "a surviving replica owning the loops", 30*time.Second, func() bool {
		o := h.loopOwners(survivors[0])
		return len(o) == 1 && o[0] != leader.name
	}, survivors...)
	t.Logf("leader %s killed: loops owned by a survivor after %s", leader.name, time.Since(killed).Round(time.Millisecond))
	if code := call(t, "GET", survivors[1].URL+"/v1/networks/ha-b0", nil, nil); code != http.StatusOK {
		t.Fatalf("read ha-b0 via %s: %d", survivors[1].name, code)
	}

	// Restarted on its data dir (--join would be ignored), it rejoins and
	// serves what was written while it was down.
	startReplica(t, leader, "", "")
	waitFor(t, leader.name+" ready again", 90*time.Second, func() bool { return readyz(leader) == http.StatusOK }, leader)
	login(t, leader.URL)
	waitFor(t, "ha-b1 read through the restarted replica", 30*time.Second, func() bool {
		code, err := tryCall("GET", leader.URL+"/v1/networks/ha-b1", nil)
		return err == nil && code == http.StatusOK
	}, leader)
	waitFor(t, "three healthy voters again", 60*time.Second, func() bool { return healthyVoters(survivors[0]) == 3 }, rs...)
}
