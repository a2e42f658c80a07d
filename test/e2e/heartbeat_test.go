//go:build e2e

package e2e

import (
	"bytes"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
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
func startAgent(t *testing.T, state string) *agentProcess {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir(t), "otherix-agent"), "serve", "--state-dir", state, "--accel", "tcg")
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
		deadline := time.Now().Add(within)
		for {
			n = getNode(t, api.URL, "n1")
			if n.Phase == want {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("node n1 is %s, not %s, after %s\nagent:\n%s\napi:\n%s", n.Phase, want, within, agent.out.String(), api.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
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
