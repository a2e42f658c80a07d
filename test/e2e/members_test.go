//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/security"
)

// TestRemoveRunningReplica: with three voters, removing a healthy one while
// another is down is refused (quorum_at_risk); the down one is removed and,
// restarted, exits naming its removal; a running one is removed and stops
// serving by itself, exiting non-zero with the reason. The members list
// carries every member's Raft lag (asked of the leader) and versions, and
// cluster info lists the replicas.
func TestRemoveRunningReplica(t *testing.T) {
	h := newHACluster(t, "otherix", "r2", "r3")
	h.startAll()
	rs := h.rs
	via := rs[0].rest

	var leader *replica
	waitFor(t, "a leader listed", 30*time.Second, func() bool {
		for _, m := range h.members(rs[0]) {
			for _, r := range rs {
				if m.IsLeader && m.Name == r.name {
					leader = r
				}
			}
		}
		return leader != nil
	}, rs...)
	waitFor(t, "lag and versions of every member, from the leader", 30*time.Second, func() bool {
		ms := h.members(leader)
		for _, m := range ms {
			if m.RaftIndexLag == nil || m.Version == "" || m.EtcdVersion == "" {
				return false
			}
		}
		return len(ms) == 3
	}, rs...)
	if out, err := h.cli("--context", via, "cluster", "members", "-o", "wide"); err != nil || !strings.Contains(out, "LAG") {
		t.Fatalf("members -o wide: %v\n%s", err, out)
	}
	if out, err := h.cli("--context", via, "cluster", "info"); err != nil || !strings.Contains(out, "Replicas:") ||
		!strings.Contains(out, "r2 (voter") || !strings.Contains(out, "r3 (voter") {
		t.Fatalf("cluster info: %v\n%s", err, out)
	}

	// A join whose joiner never starts leaves a learner without a name:
	// listed with its id, removed by its peer address.
	ghostPeer := freePort(t)
	ghostJoin(t, h, ghostPeer)
	var ghostID string
	waitFor(t, "the never-started learner listed", 30*time.Second, func() bool {
		for _, m := range h.members(rs[0]) {
			if m.Name == "" && m.PeerURL == "https://"+ghostPeer && m.Role == "learner" && m.ID != "" {
				ghostID = m.ID
				return true
			}
		}
		return false
	}, rs...)
	if out, err := h.cli("--context", via, "cluster", "members", "-o", "wide"); err != nil || !strings.Contains(out, ghostID) {
		t.Fatalf("members -o wide does not show the learner's id %s: %v\n%s", ghostID, err, out)
	}
	if out, err := h.cli("--context", via, "cluster", "members", "remove", ghostPeer); err != nil || out != "member/"+ghostID+" removed\n" {
		t.Fatalf("remove the never-started learner by its peer address: %v %q", err, out)
	}
	if n := len(h.members(rs[0])); n != 3 {
		t.Fatalf("%d members after removing the learner, want 3", n)
	}

	r2, r3 := rs[1], rs[2]
	r2.kill9()
	waitFor(t, "r2 unhealthy", 30*time.Second, func() bool {
		for _, m := range h.members(rs[0]) {
			if m.Name == "r2" {
				return !m.Healthy
			}
		}
		return false
	}, rs[0], r3)
	if _, err := h.cli("--context", via, "cluster", "members", "remove", "r3"); err == nil || !strings.Contains(err.Error(), "quorum_at_risk") {
		t.Fatalf("remove a healthy voter while another is down: %v, want quorum_at_risk", err)
	}
	if n := len(h.members(rs[0])); n != 3 {
		t.Fatalf("a refused removal changed the membership: %d members", n)
	}
	if out, err := h.cli("--context", via, "cluster", "members", "remove", "r2"); err != nil || out != "member/r2 removed\n" {
		t.Fatalf("remove the down r2: %v %q", err, out)
	}
	// Restarted on its data dir, r2 is refused by its peers and exits.
	startReplica(t, r2, "", "")
	wantExitRemoved(t, r2)

	// r3 runs and is removed: it stops serving by itself.
	if out, err := h.cli("--context", via, "cluster", "members", "remove", "r3"); err != nil || out != "member/r3 removed\n" {
		t.Fatalf("remove the running r3: %v %q", err, out)
	}
	wantExitRemoved(t, r3)
	ms := h.members(rs[0])
	if len(ms) != 1 || ms[0].Name != "otherix" || ms[0].Role != "voter" {
		t.Fatalf("members after the removals: %+v", ms)
	}
	if code := call(t, "POST", rs[0].URL+"/v1/networks", map[string]any{"name": "after-remove", "cidr": "10.93.0.0/24"}, nil); code != http.StatusCreated {
		t.Fatalf("write on the replica left: %d", code)
	}
}

// wantExitRemoved waits for a removed replica to exit non-zero, saying it
// was removed from the cluster.
func wantExitRemoved(t *testing.T, r *replica) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("removed replica %s still running:\n%s", r.name, r.stderr.String())
	}
	// Its last word is otherix-api's exit message (etcd logs the removal
	// too, and a panic would print a stack last).
	lines := strings.Split(strings.TrimSpace(r.stderr.String()), "\n")
	last := lines[len(lines)-1]
	if r.cmd.ProcessState.ExitCode() != 1 || !strings.HasPrefix(last, "otherix-api: ") || !strings.Contains(last, "removed from the cluster") {
		t.Fatalf("removed replica %s exited with %v; want status 1, naming its removal:\n%s", r.name, r.waitErr, r.stderr.String())
	}
	t.Logf("%s exited (%v): %s", r.name, r.waitErr, last)
}

// TestJoinForeignDataDir: a replica whose data dir holds a member of
// cluster A, started with --join to cluster B, exits before starting its
// member, naming both cluster ids.
func TestJoinForeignDataDir(t *testing.T) {
	a := newHACluster(t, "otherix")
	a.startAll()
	a.rs[0].kill9()
	b := newHACluster(t, "otherix")
	b.startAll()
	token := b.replicaToken(b.rs[0])

	r := a.rs[0]
	startReplica(t, r, b.rs[0].AgentURL, token)
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("a member of another cluster started with --join:\n%s", r.stderr.String())
	}
	out := r.stderr.String()
	m := regexp.MustCompile(`holds a member of cluster ([0-9a-f]+), but \S+ belongs to cluster ([0-9a-f]+)`).FindStringSubmatch(out)
	if r.waitErr == nil || m == nil || m[1] == m[2] {
		t.Fatalf("exit %v, want both cluster ids named:\n%s", r.waitErr, out)
	}
	t.Logf("refused: %s", m[0])
	// Nothing joined B.
	if n := len(b.members(b.rs[0])); n != 1 {
		t.Fatalf("cluster B has %d members", n)
	}
}

// ghostJoin runs the join handshake for a replica "ghost" at peer address
// peer, as a joiner would, and never starts it.
func ghostJoin(t *testing.T, h *haCluster, peer string) {
	t.Helper()
	host, _, _ := strings.Cut(peer, ":")
	_, csr, err := security.NewReplicaKeyAndCSR("ghost", []string{host})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"token": h.replicaToken(h.rs[0]), "name": "ghost", "peer_url": "https://" + peer,
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	client := caClient(filepath.Join(h.rs[0].dataDir, "pki", "ca.pem"))
	defer client.CloseIdleConnections()
	resp, err := client.Post(h.rs[0].AgentURL+"/v1/cluster/join", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK {
		t.Fatalf("ghost join: %d %s", resp.StatusCode, b)
	}
}
