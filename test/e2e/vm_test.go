//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/test/guest"
)

// cluster is a real otherix-api with one real agent enrolled as n1 and a CLI
// logged in to it.
type cluster struct {
	t        *testing.T
	api      *apiProcess
	dataDir  string
	state    string
	agent    *agentProcess
	cliEnv   []string
	imageURL string
	imageSHA string
	images   *imageServer
}

// imageServer serves the test guest on loopback. Requests for slow.qcow2
// trickle so a create can be caught mid-download.
type imageServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string]int
}

func (s *imageServer) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[name]
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterBeating(t, time.Second)
}

// newClusterBeating is newCluster with the given heartbeat interval.
func newClusterBeating(t *testing.T, heartbeat time.Duration) *cluster {
	t.Helper()
	is, sha := newImageServer(t)
	c := &cluster{t: t, dataDir: t.TempDir(), imageURL: is.URL + "/images/guest.qcow2", imageSHA: sha, images: is}
	c.api = startAPI(t, c.dataDir, "OTHERIX_HEARTBEAT__INTERVAL="+heartbeat.String())
	token := createJoinToken(t, c.api.URL, map[string]string{"ttl": "10m"})
	c.state = agentState(t)
	state := c.state
	if out, err := bootstrap(t, "--server", c.api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	c.agent = startAgent(t, state)
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "node n1 ready", func() bool { return getNode(t, c.api.URL, "n1").Phase == "ready" })

	cfg := filepath.Join(t.TempDir(), "otherix-config")
	c.cliEnv = append(os.Environ(), "OTHERIX_CONFIG="+cfg)
	fp := caFingerprint(t, filepath.Join(c.dataDir, "pki", "ca.pem"))
	out, code := c.cliIn(adminPassword, "login", c.api.URL, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp)
	if code != 0 {
		t.Fatalf("otherix login: exit %d\n%s", code, out)
	}
	return c
}

// newImageServer serves the test guest on loopback (imageServer) and
// returns it with the guest's SHA-256.
func newImageServer(t *testing.T) (*imageServer, string) {
	t.Helper()
	img := guest.Image(t)
	body, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	is := &imageServer{requests: map[string]int{}}
	is.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := filepath.Base(r.URL.Path)
		is.mu.Lock()
		is.requests[name]++
		is.mu.Unlock()
		switch name {
		case "guest.qcow2":
			http.ServeContent(w, r, name, time.Time{}, strings.NewReader(string(body)))
		case "slow.qcow2":
			// Whole, but slowly: about 2 s for the 13 MiB guest.
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			for off := 0; off < len(body); off += 256 << 10 {
				end := min(off+256<<10, len(body))
				if _, err := w.Write(body[off:end]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(40 * time.Millisecond):
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(is.Close)
	return is, hex.EncodeToString(sum[:])
}

// agentState makes an agent state dir; at cleanup whatever QEMU a failed
// test left running there is killed by its pid file, and the dir removed.
func agentState(t *testing.T) string {
	t.Helper()
	// Short: QEMU's unix sockets live under the agent's run dir.
	state, err := os.MkdirTemp("", "oxa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever a failed test left running is ended by the pid QEMU
		// wrote, then the state goes.
		pids, _ := filepath.Glob(filepath.Join(state, "run", "*", "qemu.pid"))
		for _, f := range pids {
			var pid int
			if b, err := os.ReadFile(f); err == nil {
				if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		os.RemoveAll(state)
	})
	return state
}

func caFingerprint(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

// cli runs the real otherix CLI and returns its output and exit code.
func (c *cluster) cli(args ...string) (string, int) { return c.cliIn("", args...) }

func (c *cluster) cliIn(stdin string, args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(binDir(c.t), "otherix"), args...)
	cmd.Env = c.cliEnv
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		c.t.Fatalf("otherix %v: %v", args, err)
	}
	return string(out), 0
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func (c *cluster) mustCLI(args ...string) string {
	c.t.Helper()
	out, code := c.cli(args...)
	if code != 0 {
		c.t.Fatalf("otherix %s: exit %d\n%s\nagent:\n%s", strings.Join(args, " "), code, out, tail(c.agent.out.String(), 3000))
	}
	return out
}

type vmStatus struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status struct {
		Phase   string `json:"phase"`
		Node    string `json:"node"`
		Pid     int    `json:"pid"`
		Message string `json:"message"`
	} `json:"status"`
}

func (c *cluster) vm(name string) vmStatus {
	c.t.Helper()
	var v vmStatus
	if err := json.Unmarshal([]byte(c.mustCLI("vm", "get", name, "-o", "json")), &v); err != nil {
		c.t.Fatalf("vm get %s -o json: %v", name, err)
	}
	return v
}

func (c *cluster) waitPhase(name, phase string, within time.Duration) vmStatus {
	c.t.Helper()
	var v vmStatus
	testutil.Eventually(c.t, within, 50*time.Millisecond, "vm "+name+" "+phase, func() bool {
		v = c.vm(name)
		return v.Status.Phase == phase
	})
	return v
}

// waitLog waits until the VM's serial log holds want at least n times.
func (c *cluster) waitLog(name, want string, n int, within time.Duration) {
	c.t.Helper()
	var out string
	if !testutil.Until(within, 200*time.Millisecond, func() bool { out, _ = c.cli("vm", "logs", name); return strings.Count(out, want) >= n }) {
		c.t.Fatalf("vm %s: %q not seen %d times in its log within %s:\n%s", name, want, n, within, tail(out, 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestVMLifecycleOnRealQEMU is the product's promise: create a VM from an
// image URL through the CLI, see it boot, stop it for real, start it again,
// survive an agent crash, and delete it — on real QEMU with a real guest.
func TestVMLifecycleOnRealQEMU(t *testing.T) {
	c := newCluster(t)
	if !strings.Contains(c.agent.out.String(), "accelerator=tcg") {
		t.Logf("agent output:\n%s", c.agent.out.String())
	}
	t.Log("guests boot under TCG: /dev/kvm on these machines cannot boot guests (see the README)")

	out := c.mustCLI("vm", "create", "g1", "--image", c.imageURL, "--sha256", c.imageSHA,
		"--memory", "256Mi", "--disk", "1Gi", "--wait")
	t.Logf("create:\n%s", out)
	v := c.vm("g1")
	if v.Status.Phase != "running" || v.Status.Node != "n1" || !qemu.Alive(v.Status.Pid) {
		t.Fatalf("after create --wait: %+v", v)
	}
	wantConfinedQEMU(t, v.Status.Pid)
	booted := time.Now()
	c.waitLog("g1", guest.ReadyMarker+" instance-id="+v.ID, 1, 90*time.Second)
	t.Logf("guest printed its marker %s after create returned", time.Since(booted).Round(time.Millisecond))

	// An agent crash leaves the VM running; the restarted agent adopts it.
	c.agent.kill()
	if !qemu.Alive(v.Status.Pid) {
		t.Fatal("QEMU died with the agent")
	}
	c.agent = startAgent(t, c.state)
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "the restarted agent reports the vm", func() bool {
		return strings.Contains(c.agent.out.String(), "re-adopted running vm")
	})
	if again := c.vm("g1"); again.Status.Pid != v.Status.Pid || again.Status.Phase != "running" {
		t.Fatalf("after agent restart: %+v (pid was %d)", again, v.Status.Pid)
	}

	// Graceful stop: the guest sees the ACPI button and powers off.
	c.mustCLI("vm", "stop", "g1", "--grace-period", "90s", "--wait")
	if s := c.vm("g1"); s.Status.Phase != "stopped" || qemu.Alive(v.Status.Pid) {
		t.Fatalf("after stop: %+v, old pid running=%v", s, qemu.Alive(v.Status.Pid))
	}

	c.mustCLI("vm", "start", "g1", "--wait")
	v2 := c.vm("g1")
	if v2.Status.Phase != "running" || !qemu.Alive(v2.Status.Pid) || v2.Status.Pid == v.Status.Pid {
		t.Fatalf("after start: %+v", v2)
	}
	wantConfinedQEMU(t, v2.Status.Pid)
	c.waitLog("g1", guest.ReadyMarker+" instance-id="+v.ID, 2, 90*time.Second)

	// Deleting a running VM needs --force, which powers it off first.
	if out, code := c.cli("vm", "delete", "g1", "--wait"); code == 0 {
		t.Fatalf("delete of a running vm without --force succeeded:\n%s", out)
	}
	c.mustCLI("vm", "delete", "g1", "--force", "--wait")
	if qemu.Alive(v2.Status.Pid) {
		t.Fatal("forced delete left QEMU running")
	}
	if _, code := c.cli("vm", "get", "g1"); code == 0 {
		t.Fatal("deleted vm still listed")
	}
	disks, _ := filepath.Glob(filepath.Join(c.state, "pools", "default", "vms", "*"))
	if len(disks) != 0 {
		t.Fatalf("delete left disks: %v", disks)
	}
	// Each transition above left its lifecycle event; the agent's restart,
	// which changed nothing, left none.
	if got := eventTypes(t, c, "--type", "vm", "--object", "g1"); got != "vm.created vm.started vm.stopped vm.started vm.deleted" {
		t.Fatalf("vm events: %s", got)
	}
	if got := eventTypes(t, c, "--type", "node"); !strings.HasPrefix(got, "node.ready") {
		t.Fatalf("node events: %s", got)
	}
}

// eventTypes runs otherix events -o json with args and returns the events'
// types in order, space-separated.
func eventTypes(t *testing.T, c *cluster, args ...string) string {
	t.Helper()
	var doc struct {
		Items []struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"items"`
	}
	out := c.mustCLI(append([]string{"events", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("otherix events: %v\n%s", err, out)
	}
	var types []string
	for _, e := range doc.Items {
		types = append(types, e.Type)
	}
	return strings.Join(types, " ")
}

// TestVMCreateFailsCleanly: a wrong sha256 and a missing image each fail the
// task with a stable code and leave nothing on the node.
func TestVMCreateFailsCleanly(t *testing.T) {
	c := newCluster(t)
	out, code := c.cli("vm", "create", "bad", "--image", c.imageURL, "--sha256", strings.Repeat("0", 64), "--wait")
	if code != 1 || !strings.Contains(out, "image_checksum_mismatch") {
		t.Fatalf("bad sha256: exit %d\n%s", code, out)
	}
	out, code = c.cli("vm", "create", "missing", "--image", c.images.URL+"/images/nope.qcow2", "--wait")
	if code != 1 || !strings.Contains(out, "image_not_found") {
		t.Fatalf("missing image: exit %d\n%s", code, out)
	}
	for _, name := range []string{"bad", "missing"} {
		if v := c.vm(name); v.Status.Phase != "failed" {
			t.Errorf("vm %s: %+v", name, v)
		}
	}
	left, _ := filepath.Glob(filepath.Join(c.state, "pools", "default", "vms", "*"))
	states, _ := filepath.Glob(filepath.Join(c.state, "vms", "*"))
	if len(left)+len(states) != 0 {
		t.Fatalf("failed creates left %v %v", left, states)
	}
	// A failed VM deletes cleanly.
	c.mustCLI("vm", "delete", "bad", "--wait")
}

// TestAPIKilledMidCreate: the API dies while the agent downloads the image;
// after the restart the job resumes against the same agent task and exactly
// one VM (and one QEMU) results.
func TestAPIKilledMidCreate(t *testing.T) {
	c := newCluster(t)
	out := c.mustCLI("vm", "create", "g2", "--image", c.images.URL+"/images/slow.qcow2", "--memory", "256Mi", "--disk", "1Gi")
	t.Logf("create:\n%s", out)
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "the download to start", func() bool { return c.images.count("slow.qcow2") > 0 })
	listen := strings.TrimPrefix(c.api.URL, "https://")
	agentListen := strings.TrimPrefix(c.api.AgentURL, "https://")
	c.api.kill9()
	c.api = startAPIAt(t, c.dataDir, listen, "OTHERIX_HEARTBEAT__INTERVAL=1s", "OTHERIX_AGENT_LISTEN="+agentListen)
	v := c.waitPhase("g2", "running", 3*time.Minute)
	if !qemu.Alive(v.Status.Pid) {
		t.Fatalf("g2: %+v", v)
	}
	var list struct {
		Items []vmStatus `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.mustCLI("vm", "list", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d vms after the restart: %+v", len(list.Items), list.Items)
	}
	if n := c.images.count("slow.qcow2"); n != 1 {
		t.Errorf("the image was requested %d times; the redelivered job should have joined the first download", n)
	}
	pids, _ := filepath.Glob(filepath.Join(c.state, "run", "*", "qemu.pid"))
	if len(pids) != 1 {
		t.Errorf("%d QEMU run dirs: %v", len(pids), pids)
	}
	c.mustCLI("vm", "delete", "g2", "--force", "--wait")
}

// wantConfinedQEMU checks what the agent's defaults promise: QEMU never
// runs as root (when the agent does) and its seccomp sandbox denies
// spawning processes and changing ids.
func wantConfinedQEMU(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(status), "\n")
	if !slices.Contains(lines, "Seccomp:\t2") {
		t.Errorf("QEMU pid %d is not under seccomp", pid)
	}
	if os.Geteuid() == 0 {
		for _, l := range lines {
			if f := strings.Fields(l); len(f) == 5 && f[0] == "Uid:" && slices.Contains(f[1:], "0") {
				t.Errorf("QEMU pid %d runs as root: %s", pid, l)
			}
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cmdline), "spawn=deny") || !strings.Contains(string(cmdline), "elevateprivileges=deny") {
		t.Errorf("QEMU's sandbox allows spawn or elevating privileges: %q", cmdline)
	}
}
