//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// syncBuffer is a bytes.Buffer safe to write from a process's output copier
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// agentProcess is one running otherix-agent serve.
type agentProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// startAgent runs otherix-agent serve on an enrolled state dir.
func startAgent(t *testing.T, state string, extra ...string) *agentProcess {
	t.Helper()
	return startAgentFrom(t, binDir(t), state, extra...)
}

// startAgentFrom is startAgent with the otherix-agent in bin.
func startAgentFrom(t *testing.T, bin, state string, extra ...string) *agentProcess {
	t.Helper()
	// No data plane unless a test asks for one (overlay_test.go, inside
	// its own namespaces): as root, auto would build it in the host's.
	// The tests serve images over loopback, which the agent refuses to
	// fetch from unless allowed.
	args := append([]string{"serve", "--state-dir", state, "--accel", "tcg", "--listen", "127.0.0.1:0", "--data-plane", "off",
		"--image-allow", "127.0.0.1/32"}, extra...)
	cmd := exec.Command(filepath.Join(bin, "otherix-agent"), args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start otherix-agent serve: %v", err)
	}
	p := &agentProcess{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

// kill ends the agent this test started, by its pid, and waits for it.
func (p *agentProcess) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

type nodeView struct {
	Name   string `json:"name"`
	Phase  string `json:"phase"`
	Status struct {
		LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
		Capacity        *struct {
			CPUs        int    `json:"cpus"`
			Accelerator string `json:"accelerator"`
		} `json:"capacity"`
	} `json:"status"`
}

func getNode(t *testing.T, base, name string) nodeView {
	t.Helper()
	var n nodeView
	if code := call(t, "GET", base+"/v1/nodes/"+name, nil, &n); code != http.StatusOK {
		t.Fatalf("get node %s: status %d", name, code)
	}
	return n
}

// TestHeartbeatLiveness: a real agent heartbeats a real API over mutual TLS;
// the node turns ready, goes unreachable then gone when the agent dies, and
// comes back ready when it restarts.
func TestHeartbeatLiveness(t *testing.T) {
	api := startAPI(t, t.TempDir(), "OTHERIX_HEARTBEAT__INTERVAL=1s", "OTHERIX_NODES__GONE_AFTER=6s")
	token := createJoinToken(t, api.URL, map[string]string{"ttl": "10m"})
	state := filepath.Join(t.TempDir(), "state")
	if out, err := bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("bootstrap: %v\n%s\napi:\n%s", err, out, api.stderr.String())
	}
	if n := getNode(t, api.URL, "n1"); n.Phase != "pending" {
		t.Fatalf("enrolled node: %+v", n)
	}

	agent := startAgent(t, state)
	waitPhase := func(want string, within time.Duration) nodeView {
		t.Helper()
		var n nodeView
		if !testutil.Until(within, 100*time.Millisecond, func() bool { n = getNode(t, api.URL, "n1"); return n.Phase == want }) {
			t.Fatalf("node n1 is %s, not %s, after %s\nagent:\n%s\napi:\n%s", n.Phase, want, within, agent.out.String(), api.stderr.String())
		}
		return n
	}
	n := waitPhase("ready", 20*time.Second)
	if n.Status.LastHeartbeatAt == nil || n.Status.Capacity == nil || n.Status.Capacity.CPUs < 1 || n.Status.Capacity.Accelerator != "tcg" {
		t.Fatalf("ready node without status: %+v", n)
	}

	agent.kill()
	killed := time.Now()
	waitPhase("unreachable", 10*time.Second)
	if d := time.Since(killed); d < 1500*time.Millisecond {
		t.Errorf("unreachable %s after the agent died, before three intervals", d)
	}
	waitPhase("gone", 15*time.Second)

	agent = startAgent(t, state)
	waitPhase("ready", 20*time.Second)
	mustContain(t, api.stderr.String(), "node unreachable")
}

// TestAgentRidesOutAPIRestart: the API stops and comes back on the same data
// dir; the agent keeps running through it, and its heartbeats resume
// without a restart or re-enrollment.
func TestAgentRidesOutAPIRestart(t *testing.T) {
	dataDir := t.TempDir()
	api := startAPI(t, dataDir, "OTHERIX_HEARTBEAT__INTERVAL=1s")
	token := createJoinToken(t, api.URL, map[string]string{"ttl": "10m"})
	state := filepath.Join(t.TempDir(), "state")
	if out, err := bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	agent := startAgent(t, state)
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, "node ready", func() bool { return getNode(t, api.URL, "n1").Phase == "ready" })

	// The same listener addresses: the agent knows the API by its URL.
	agentListen := strings.TrimPrefix(api.AgentURL, "https://")
	listen := strings.TrimPrefix(api.URL, "https://")
	api.stop()
	stoppedAt := time.Now()
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, "the agent notices the API is gone", func() bool {
		return strings.Contains(agent.out.String(), "heartbeat failing")
	})
	select {
	case <-agent.done:
		t.Fatalf("the agent exited when the API stopped:\n%s", agent.out.String())
	default:
	}

	api = startAPIAt(t, dataDir, listen, "OTHERIX_HEARTBEAT__INTERVAL=1s", "OTHERIX_AGENT_LISTEN="+agentListen)
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "a heartbeat after the restart", func() bool {
		n := getNode(t, api.URL, "n1")
		return n.Phase == "ready" && n.Status.LastHeartbeatAt != nil && n.Status.LastHeartbeatAt.After(stoppedAt)
	})
	select {
	case <-agent.done:
		t.Fatalf("the agent exited:\n%s", agent.out.String())
	default:
	}
}

// TestAgentRenewsCertificate: an agent whose certificate is due renews it
// over mutual TLS at start, the control plane records the new one, and
// heartbeats go on with it.
func TestAgentRenewsCertificate(t *testing.T) {
	api := startAPI(t, t.TempDir(), "OTHERIX_HEARTBEAT__INTERVAL=1s")
	token := createJoinToken(t, api.URL, map[string]string{"ttl": "10m"})
	state := filepath.Join(t.TempDir(), "state")
	if out, err := bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	var before struct {
		CertFingerprint string `json:"cert_fingerprint"`
	}
	call(t, "GET", api.URL+"/v1/nodes/n1", nil, &before)
	// Due at once: the certificate expires within "renew-before".
	agent := startAgent(t, state, "--renew-before", "2400h")
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "the renewal", func() bool {
		return strings.Contains(agent.out.String(), "node certificate renewed")
	})
	var after struct {
		CertFingerprint     string `json:"cert_fingerprint"`
		PrevCertFingerprint string `json:"prev_cert_fingerprint"`
		Phase               string `json:"phase"`
	}
	if !testutil.Until(30*time.Second, 100*time.Millisecond, func() bool {
		after.PrevCertFingerprint = "" // omitted when empty: decode afresh
		call(t, "GET", api.URL+"/v1/nodes/n1", nil, &after)
		return after.Phase == "ready" && after.CertFingerprint != before.CertFingerprint && after.PrevCertFingerprint == ""
	}) {
		t.Fatalf("no heartbeat with the new certificate: node %+v (was %s)\nagent:\n%s\napi:\n%s",
			after, before.CertFingerprint, agent.out.String(), api.stderr.String())
	}
	certPEM, err := os.ReadFile(filepath.Join(state, "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	sum := sha256.Sum256(block.Bytes)
	if hex.EncodeToString(sum[:]) != after.CertFingerprint {
		t.Fatalf("node.pem is %x, the control plane records %s", sum, after.CertFingerprint)
	}
}
