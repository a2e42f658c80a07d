//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/dirformat"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// upgradeFrom is the release the upgrade test starts from: the last commit
// that landed before data formats were versioned, which is what every
// install made until then runs. Move it to the previous release's tag at
// each release; OTHERIX_UPGRADE_FROM overrides it.
const upgradeFrom = "2e301b4"

// upgradeFromVersion is stamped into the old build. It is a release
// version one minor below any this tree would be released as, so the
// skew rule accepts the old agent under the new control plane.
const upgradeFromVersion = "0.1.0"

// TestUpgradeKeepsVMsRunning follows docs/operations.md's upgrade order on
// real processes: an install of the previous release runs a VM on a real
// agent and holds a network; the control plane is upgraded (stopped,
// started from the new build on the same data dir and ports), then the
// agent. The VM's QEMU is never restarted (same pid throughout), the new
// agent re-adopts it, every resource is still there, and the VM is still
// usable: it stops and is deleted through the new build.
func TestUpgradeKeepsVMsRunning(t *testing.T) {
	from := upgradeFrom
	if v := os.Getenv("OTHERIX_UPGRADE_FROM"); v != "" {
		from = v
	}
	oldBin := buildOldRelease(t, from, upgradeFromVersion)

	images, sha := newImageServer(t)

	dataDir := t.TempDir()
	addr, agentAddr := freePort(t), freePort(t)
	env := []string{"OTHERIX_AGENT_LISTEN=" + agentAddr, "OTHERIX_HEARTBEAT__INTERVAL=1s"}
	old := startAPIFrom(t, oldBin, dataDir, addr, env...)
	state := agentState(t)
	token := createJoinToken(t, old.URL, map[string]string{"ttl": "10m"})
	if out, err := bootstrapFrom(t, oldBin, "--server", old.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("old bootstrap: %v\n%s", err, out)
	}
	oldAgent := startAgentFrom(t, oldBin, state)
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "node n1 ready under the old release", func() bool {
		return getNode(t, old.URL, "n1").Phase == "ready"
	})
	if code := call(t, "POST", old.URL+"/v1/networks", map[string]any{"name": "up-net", "cidr": "10.93.0.0/24"}, nil); code != http.StatusCreated {
		t.Fatalf("create network on the old release: %d", code)
	}
	var a accepted
	spec := map[string]any{"image": map[string]any{"url": images.URL + "/images/guest.qcow2", "sha256": sha},
		"memory_mib": 256, "disk_gib": 1}
	if code := call(t, "POST", old.URL+"/v1/vms", map[string]any{"name": "u1", "spec": spec}, &a); code != http.StatusAccepted {
		t.Fatalf("create vm on the old release: %d", code)
	}
	waitTask(t, old.URL, a.Task.ID, "success", 3*time.Minute)
	before := vmByName(t, old.URL, "u1")
	if before.Status.Phase != "running" || !qemu.Alive(before.Status.Pid) {
		t.Fatalf("vm under the old release: %+v", before)
	}

	// 1. The control plane: stopped, and started from the new build on
	// the same data dir and ports (what a package upgrade does).
	old.stop()
	upgraded := time.Now()
	api := startAPIAt(t, dataDir, addr, env...)
	if got := vmByName(t, api.URL, "u1"); got.ID != before.ID || got.Status.Phase != "running" || got.Status.Pid != before.Status.Pid {
		t.Fatalf("vm after the control-plane upgrade: %+v, was %+v", got, before)
	}
	if code := call(t, "GET", api.URL+"/v1/networks/up-net", nil, nil); code != http.StatusOK {
		t.Fatalf("network after the control-plane upgrade: %d", code)
	}
	// The old agent keeps heartbeating to the new control plane.
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "the old agent heartbeats to the new control plane", func() bool {
		n := getNode(t, api.URL, "n1")
		return n.Phase == "ready" && n.Status.LastHeartbeatAt != nil && n.Status.LastHeartbeatAt.After(upgraded)
	})

	// 2. The agent: stopped as systemd stops it (SIGTERM to the agent
	// only), started from the new build on the same state dir.
	_ = oldAgent.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-oldAgent.done:
	case <-time.After(time.Minute):
		t.Fatal("the old agent did not stop on SIGTERM")
	}
	if !qemu.Alive(before.Status.Pid) {
		t.Fatal("stopping the old agent stopped QEMU")
	}
	agent := startAgent(t, state)
	testutil.Eventually(t, 60*time.Second, 50*time.Millisecond, "the new agent re-adopts the vm", func() bool {
		return strings.Contains(agent.out.String(), "re-adopted running vm")
	})
	if got := vmByName(t, api.URL, "u1"); got.Status.Phase != "running" || got.Status.Pid != before.Status.Pid {
		t.Fatalf("vm after the agent upgrade: %+v, pid was %d", got, before.Status.Pid)
	}
	if s, err := dirformat.Read(state); err != nil || s.Version < 1 {
		t.Fatalf("the new agent did not stamp its state dir's format: %+v %v", s, err)
	}

	// 3. Still usable: stop and delete through the new build.
	var stopped accepted
	if code := call(t, "POST", api.URL+"/v1/vms/"+before.ID+"/poweroff", nil, &stopped); code != http.StatusAccepted {
		t.Fatalf("poweroff after the upgrade: %d", code)
	}
	waitTask(t, api.URL, stopped.Task.ID, "success", time.Minute)
	if qemu.Alive(before.Status.Pid) {
		t.Fatal("QEMU still runs after a poweroff through the upgraded build")
	}
	var deleted accepted
	if code := call(t, "DELETE", api.URL+"/v1/vms/"+before.ID, nil, &deleted); code != http.StatusAccepted {
		t.Fatalf("delete after the upgrade: %d", code)
	}
	waitTask(t, api.URL, deleted.Task.ID, "success", time.Minute)
}

// buildOldRelease builds otherix-api and otherix-agent of commit rev,
// stamped version, into a cache kept between runs (the build of a commit
// never changes), and returns their directory.
func buildOldRelease(t *testing.T, rev, version string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	full, err := exec.Command("git", "-C", root, "rev-parse", "--verify", rev+"^{commit}").Output()
	if err != nil {
		t.Fatalf("the release to upgrade from, %s, is not in this clone's history (fetch it, or set OTHERIX_UPGRADE_FROM): %v", rev, err)
	}
	commit := strings.TrimSpace(string(full))
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(cache, "otherix", "upgrade-from", commit+"-"+version)
	if _, err := os.Stat(filepath.Join(bin, "otherix-agent")); err == nil {
		return bin
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", root, commit, src))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	tmp := bin + ".tmp"
	_ = os.RemoveAll(tmp)
	ld := "-X github.com/otherix/otherix/internal/buildinfo.version=" + version +
		" -X github.com/otherix/otherix/internal/buildinfo.commit=" + commit
	build := exec.Command("go", "build", "-ldflags", ld, "-o", tmp+"/", "./cmd/otherix-api", "./cmd/otherix-agent")
	build.Dir = src
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", commit, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the release to upgrade from (%s, as %s) in %s", commit[:12], version, time.Since(start).Round(time.Second))
	return bin
}

func waitTask(t *testing.T, base, id, state string, within time.Duration) {
	t.Helper()
	var tk task
	testutil.EventuallyReport(t, within, 100*time.Millisecond, "task "+id+" "+state, func() (bool, string) {
		tk = getTask(t, base, id)
		return tk.State == state, fmt.Sprintf("%+v", tk)
	})
}

type vmWithPid struct {
	ID     string `json:"id"`
	Status struct {
		Phase string `json:"phase"`
		Pid   int    `json:"pid"`
	} `json:"status"`
}

func vmByName(t *testing.T, base, name string) vmWithPid {
	t.Helper()
	var v vmWithPid
	if code := call(t, "GET", base+"/v1/vms/"+name, nil, &v); code != http.StatusOK {
		t.Fatalf("get vm %s: %d", name, code)
	}
	return v
}
