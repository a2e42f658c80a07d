//go:build e2e

package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/persistence/etcd"
)

// TestRestoreBackupThenGrow is the disaster recovery of docs/ha.md with the
// real binaries: a replica's backup, taken by the loop owner, is restored
// into a new data dir after the replica is killed; the restored replica
// starts with a peer listener as a single-member cluster that owns its loops
// at once, holds what the backup held and not what came after, and grows
// again to three voters by joins.
func TestRestoreBackupThenGrow(t *testing.T) {
	t.Setenv("OTHERIX_BACKUP__INTERVAL", "1s")
	base := t.TempDir()
	newReplica := func(name, dir string) *replica {
		return &replica{name: name, dataDir: filepath.Join(base, dir), rest: freePort(t), agent: freePort(t), peer: freePort(t)}
	}
	ready := func(r *replica) {
		t.Helper()
		clients.Store(r.rest, caClient(filepath.Join(r.dataDir, "pki", "ca.pem")))
		login(t, r.URL)
	}
	type member struct {
		Name      string `json:"name"`
		Role      string `json:"role"`
		Healthy   bool   `json:"healthy"`
		LoopOwner bool   `json:"loop_owner"`
	}
	members := func(r *replica) []member {
		var l struct{ Items []member }
		if code := call(t, "GET", r.URL+"/v1/cluster/members", nil, &l); code != http.StatusOK {
			t.Fatalf("members via %s: %d", r.name, code)
		}
		return l.Items
	}

	old := newReplica("otherix", "lost")
	startReplica(t, old, "", "")
	waitFor(t, "the first replica ready", 60*time.Second, func() bool { return readyz(old) == http.StatusOK }, old)
	ready(old)
	if code := call(t, "POST", old.URL+"/v1/networks", map[string]any{"name": "dr-kept", "cidr": "10.93.0.0/24"}, nil); code != http.StatusCreated {
		t.Fatalf("create dr-kept: %d", code)
	}
	written := time.Now()
	var backup string
	waitFor(t, "a backup taken after the write", 30*time.Second, func() bool {
		snaps, _ := etcd.Snapshots(filepath.Join(old.dataDir, "backups"))
		for _, s := range snaps {
			if fi, err := os.Stat(s); err == nil && fi.ModTime().After(written.Add(100*time.Millisecond)) {
				backup = s
				return true
			}
		}
		return false
	}, old)
	// Copied away, as an operator keeps backups off the host.
	kept := filepath.Join(base, "kept.snap.db")
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := call(t, "POST", old.URL+"/v1/networks", map[string]any{"name": "dr-lost", "cidr": "10.94.0.0/24"}, nil); code != http.StatusCreated {
		t.Fatalf("create dr-lost: %d", code)
	}
	old.kill9()

	restored := newReplica("otherix", "restored")
	out, err := exec.Command(filepath.Join(binDir(t), "otherix-api"), "restore", "--from", kept, "--data-dir", restored.dataDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "restored") {
		t.Fatalf("otherix-api restore: %v\n%s", err, out)
	}
	start := time.Now()
	startReplica(t, restored, "", "")
	waitFor(t, "the restored replica ready", 60*time.Second, func() bool { return readyz(restored) == http.StatusOK }, restored)
	ready(restored)
	if code := call(t, "GET", restored.URL+"/v1/networks/dr-kept", nil, nil); code != http.StatusOK {
		t.Fatalf("dr-kept after the restore: %d", code)
	}
	if code := call(t, "GET", restored.URL+"/v1/networks/dr-lost", nil, nil); code != http.StatusNotFound {
		t.Fatalf("dr-lost (written after the backup) after the restore: %d", code)
	}
	waitFor(t, "the restored replica owning its loops", 10*time.Second, func() bool {
		ms := members(restored)
		return len(ms) == 1 && ms[0].Role == "voter" && ms[0].LoopOwner
	}, restored)
	t.Logf("measure: restored replica started, ready and owning its loops %s after its start", time.Since(start).Round(time.Millisecond))

	// It grows again by joins.
	var joined []*replica
	for _, name := range []string{"r2", "r3"} {
		var tok struct {
			Token string `json:"token"`
		}
		if code := call(t, "POST", restored.URL+"/v1/cluster/join-tokens", map[string]string{"kind": "replica"}, &tok); code != http.StatusCreated || tok.Token == "" {
			t.Fatalf("replica join token: %d", code)
		}
		r := newReplica(name, name)
		startReplica(t, r, restored.AgentURL, tok.Token)
		joined = append(joined, r)
		// One join at a time, as an operator runs them.
		waitFor(t, name+" listed", 60*time.Second, func() bool {
			for _, m := range members(restored) {
				if m.Name == name {
					return true
				}
			}
			return false
		}, restored, r)
	}
	all := append([]*replica{restored}, joined...)
	waitFor(t, "the joiners ready", 120*time.Second, func() bool {
		return readyz(joined[0]) == http.StatusOK && readyz(joined[1]) == http.StatusOK
	}, all...)
	waitFor(t, "three healthy voters, one loop owner", 60*time.Second, func() bool {
		voters, owners := 0, 0
		for _, m := range members(restored) {
			if m.Role == "voter" && m.Healthy {
				voters++
			}
			if m.LoopOwner {
				owners++
			}
		}
		return voters == 3 && owners == 1
	}, all...)
	ready(joined[1])
	if code := call(t, "GET", joined[1].URL+"/v1/networks/dr-kept", nil, nil); code != http.StatusOK {
		t.Fatalf("dr-kept through a joiner: %d", code)
	}
}
