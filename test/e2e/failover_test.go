//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// threeReplicas is a control plane of three real otherix-api processes on
// loopback, and a CLI config of its own.
type threeReplicas struct {
	t   *testing.T
	rs  []*replica
	env []string // the CLI's environment: OTHERIX_CONFIG
}

// startThreeReplicas starts replica 1, then joins two more through its agent
// listener with replica join tokens, and waits until all three serve. The
// harness (call) is logged in to each; the CLI is not logged in.
func startThreeReplicas(t *testing.T) *threeReplicas {
	t.Helper()
	base := t.TempDir()
	c := &threeReplicas{t: t, env: append(os.Environ(), "OTHERIX_CONFIG="+filepath.Join(base, "cli.yaml"))}
	for _, name := range []string{"otherix", "r2", "r3"} {
		c.rs = append(c.rs, &replica{name: name, dataDir: filepath.Join(base, name), rest: freePort(t), agent: freePort(t), peer: freePort(t)})
	}
	serving := func(r *replica) {
		clients.Store(r.rest, caClient(filepath.Join(r.dataDir, "pki", "ca.pem")))
		login(t, r.URL)
	}
	startReplica(t, c.rs[0], "", "")
	waitFor(t, "replica 1 ready", 60*time.Second, func() bool { return readyz(c.rs[0]) == http.StatusOK }, c.rs[0])
	serving(c.rs[0])
	for _, r := range c.rs[1:] {
		var tok struct {
			Token string `json:"token"`
		}
		if code := call(t, "POST", c.rs[0].URL+"/v1/cluster/join-tokens", map[string]string{"kind": "replica"}, &tok); code != http.StatusCreated {
			t.Fatalf("replica join token: %d", code)
		}
		startReplica(t, r, c.rs[0].AgentURL, tok.Token)
		// One join at a time: a joiner reads the membership from its
		// peers, which must all list it (see docs/ha.md, Joining).
		waitFor(t, r.name+" listed as a member", 60*time.Second, func() bool {
			var l struct{ Items []member }
			code, err := tryCall("GET", c.rs[0].URL+"/v1/cluster/members", nil)
			if err != nil || code != http.StatusOK {
				return false
			}
			call(t, "GET", c.rs[0].URL+"/v1/cluster/members", nil, &l)
			for _, m := range l.Items {
				if m.Name == r.name {
					return true
				}
			}
			return false
		}, c.rs[0], r)
	}
	waitFor(t, "replicas 2 and 3 ready", 120*time.Second, func() bool {
		return readyz(c.rs[1]) == http.StatusOK && readyz(c.rs[2]) == http.StatusOK
	}, c.rs...)
	serving(c.rs[1])
	serving(c.rs[2])
	return c
}

// cli runs the otherix binary with the cluster's config.
func (c *threeReplicas) cli(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(filepath.Join(binDir(c.t), "otherix"), args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("otherix %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// byURL returns the replica serving the API at u.
func (c *threeReplicas) byURL(u string) *replica {
	for _, r := range c.rs {
		if r.URL == u {
			return r
		}
	}
	c.t.Fatalf("no replica at %s", u)
	return nil
}

// TestCLIFailover: the CLI logs in through one replica and learns all
// three; that replica is killed with SIGKILL; vm list, network create and a
// manifest create keep working through another, and the switch is noted.
func TestCLIFailover(t *testing.T) {
	c := startThreeReplicas(t)
	first := c.rs[0]
	fp := caFingerprint(t, filepath.Join(first.dataDir, "pki", "ca.pem"))
	_, stderr, err := c.cli(adminPassword+"\n", "login", first.URL, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "The cluster has 3 replicas") {
		t.Fatalf("login did not learn the replicas: %s", stderr)
	}
	out, _, err := c.cli("", "config", "view", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Contexts []struct {
			Server  string   `json:"server"`
			Servers []string `json:"servers"`
		} `json:"contexts"`
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil || len(cfg.Contexts) != 1 {
		t.Fatalf("config: %v %s", err, out)
	}
	got := slices.Clone(cfg.Contexts[0].Servers)
	slices.Sort(got)
	want := []string{c.rs[0].URL, c.rs[1].URL, c.rs[2].URL}
	slices.Sort(want)
	if !slices.Equal(got, want) || cfg.Contexts[0].Server != first.URL {
		t.Fatalf("context servers %v (server %s), want %v", cfg.Contexts[0].Servers, cfg.Contexts[0].Server, want)
	}
	if _, _, err := c.cli("", "network", "create", "fo-before", "--cidr", "10.93.0.0/24"); err != nil {
		t.Fatal(err)
	}

	// The replica the CLI uses (its context's server: nothing failed yet)
	// dies. The others may be electing a leader for a moment; the CLI's
	// own write retries cover that, and reads fail over at once.
	first.kill9()
	out, stderr, err = c.cli("", "vm", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "note: "+first.URL+" did not answer (in time); using replica ") {
		t.Fatalf("vm list did not note the switch: %s", stderr)
	}
	if !strings.Contains(out, `"items"`) {
		t.Fatalf("vm list: %s", out)
	}
	if _, _, err := c.cli("", "network", "create", "fo-after", "--cidr", "10.93.1.0/24"); err != nil {
		t.Fatal(err)
	}
	out, _, err = c.cli("", "network", "list")
	if err != nil || !strings.Contains(out, "fo-before") || !strings.Contains(out, "fo-after") {
		t.Fatalf("network list after the kill: %v\n%s", err, out)
	}
	out, _, err = c.cli("", "whoami")
	if err != nil || strings.Contains(out, first.URL) {
		t.Fatalf("whoami names the dead replica: %v\n%s", err, out)
	}
	manifest := filepath.Join(t.TempDir(), "net.yaml")
	if err := os.WriteFile(manifest, []byte("kind: Network\nmetadata: {name: fo-manifest}\nspec: {cidr: 10.93.2.0/24}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.cli("", "apply", "-f", manifest); err != nil {
		t.Fatal(err)
	}
	if code := call(t, "GET", c.rs[1].URL+"/v1/networks/fo-manifest", nil, nil); code != http.StatusOK {
		t.Fatalf("fo-manifest read through r2: %d", code)
	}
}

// TestAgentFailover: an agent enrolled through replica 1 learns the three
// replicas' agent URLs from its heartbeat answers and keeps them in its
// state dir; replica 1 killed with SIGKILL, its heartbeats go on through
// another replica and the node stays ready.
func TestAgentFailover(t *testing.T) {
	t.Setenv("OTHERIX_HEARTBEAT__INTERVAL", "1s")
	c := startThreeReplicas(t)
	first := c.rs[0]
	token := createJoinToken(t, first.URL, map[string]string{"ttl": "10m"})
	state := filepath.Join(t.TempDir(), "state")
	if out, err := bootstrap(t, "--server", first.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	agent := startAgent(t, state)
	testutil.Eventually(t, 30*time.Second, 100*time.Millisecond, "node n1 ready", func() bool { return getNode(t, first.URL, "n1").Phase == "ready" })

	var kept struct {
		Servers []string `json:"servers"`
	}
	testutil.EventuallyReport(t, 30*time.Second, 100*time.Millisecond, "replicas.json names three agent URLs", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(state, "replicas.json"))
		if err != nil || json.Unmarshal(b, &kept) != nil {
			return false, fmt.Sprint(err)
		}
		return len(kept.Servers) == 3, string(b)
	})
	for _, r := range c.rs {
		if !slices.Contains(kept.Servers, r.AgentURL) {
			t.Fatalf("replicas.json %v lacks %s", kept.Servers, r.AgentURL)
		}
	}
	if fi, err := os.Stat(filepath.Join(state, "replicas.json")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("replicas.json mode: %v %v", fi, err)
	}

	first.kill9()
	killed := time.Now()
	// Heartbeats reach a survivor again: its view of the node shows a
	// heartbeat after the kill. (Each replica's node view is its node
	// actor's memory, fed by the heartbeats that replica receives; the
	// other survivor's view may lag, see docs/ha.md.)
	var via *replica
	testutil.EventuallyReport(t, 30*time.Second, 200*time.Millisecond, "a heartbeat after the kill", func() (bool, string) {
		var seen []string
		for _, r := range c.rs[1:] {
			code, err := tryCall("GET", r.URL+"/v1/nodes/n1", nil)
			if err != nil || code != http.StatusOK {
				seen = append(seen, fmt.Sprint(r.name, code, err))
				continue
			}
			n := getNode(t, r.URL, "n1")
			if n.Phase == "ready" && n.Status.LastHeartbeatAt != nil && n.Status.LastHeartbeatAt.After(killed) {
				via = r
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%s: %+v", r.name, n))
		}
		return false, strings.Join(seen, "; ")
	})
	t.Logf("heartbeats through %s %s after the kill", via.name, time.Since(killed).Round(time.Millisecond))
	if !strings.Contains(agent.out.String(), "using another") {
		t.Fatalf("the agent did not log a switch:\n%s", agent.out.String())
	}
	// And the node stays ready through ten heartbeat intervals (three
	// missed ones would make it unreachable), its heartbeats advancing.
	// The agent may move between the survivors meanwhile (each replica's
	// view is fed by the heartbeats it receives), so the newest heartbeat
	// either survivor shows is what must advance.
	newest := func() time.Time {
		var at time.Time
		for _, r := range c.rs[1:] {
			if n := getNode(t, r.URL, "n1"); n.Status.LastHeartbeatAt != nil && n.Status.LastHeartbeatAt.After(at) {
				at = *n.Status.LastHeartbeatAt
			}
		}
		return at
	}
	last := newest()
	until := time.Now().Add(10 * time.Second)
	for time.Now().Before(until) {
		n := getNode(t, via.URL, "n1")
		if n.Phase != "ready" {
			t.Fatalf("node %s through %s after the kill: %+v\nagent:\n%s", n.Phase, via.name, n, agent.out.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if now := newest(); !now.After(last) {
		t.Fatalf("heartbeats stopped: newest at %s, then %s\nagent:\n%s", last, now, agent.out.String())
	}
}
