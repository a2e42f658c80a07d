//go:build e2e

package e2e

import (
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/test/guest"
)

// consoleProc is one `otherix vm console` (or `vm logs -f`) process with
// its stdin held open and its output collected.
type consoleProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer
	done  chan struct{}
	err   error
}

func (c *cluster) startConsole(args ...string) *consoleProc {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(binDir(c.t), "otherix"), args...)
	cmd.Env = c.cliEnv
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	p := &consoleProc{cmd: cmd, stdin: stdin, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	c.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitFor waits until the process printed want, or fails with its output.
func (p *consoleProc) waitFor(t *testing.T, want string, within time.Duration) {
	t.Helper()
	printed := func() bool {
		if strings.Contains(p.out.String(), want) {
			return true
		}
		select {
		case <-p.done:
			if strings.Contains(p.out.String(), want) {
				return true
			}
			t.Fatalf("console exited (%v) before printing %q:\n%s", p.err, want, tail(p.out.String(), 3000))
		default:
		}
		return false
	}
	if !testutil.Until(within, 50*time.Millisecond, printed) {
		t.Fatalf("%q not printed within %s:\n%s", want, within, tail(p.out.String(), 3000))
	}
}

func (p *consoleProc) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("console did not exit within %s:\n%s", within, tail(p.out.String(), 2000))
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("console: %v", p.err)
	return -1
}

// TestConsoleIntoTheGuest: the CLI attaches to the real guest's serial
// console through the API and the agent, sees its boot marker, runs a
// command in its shell; a second interactive attach is refused while two
// read-only followers see the same output; Ctrl+] detaches cleanly.
func TestConsoleIntoTheGuest(t *testing.T) {
	c := newCluster(t)
	c.mustCLI("vm", "create", "g1", "--image", c.imageURL, "--sha256", c.imageSHA,
		"--memory", "256Mi", "--disk", "1Gi", "--wait")
	v := c.vm("g1")

	readers := []*consoleProc{c.startConsole("vm", "logs", "g1", "-f"), c.startConsole("vm", "console", "g1", "--readonly")}
	con := c.startConsole("vm", "console", "g1")
	con.waitFor(t, "Ctrl+]", 30*time.Second)
	con.waitFor(t, guest.ReadyMarker+" instance-id="+v.ID, 90*time.Second)

	// Only one writer: a second interactive attach is refused.
	out, code := c.cli("vm", "console", "g1")
	if code == 0 || !strings.Contains(out, "console_busy") {
		t.Fatalf("second interactive console: exit %d\n%s", code, out)
	}

	// The shell on ttyS0 answers; retype until the prompt has taken it
	// (the guest may still be starting its shell).
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(con.out.String(), "hello-42") {
		if _, err := io.WriteString(con.stdin, "echo hello-$((6*7))\n"); err != nil {
			t.Fatalf("type: %v\n%s", err, con.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hello-42 from the guest's shell:\n%s", tail(con.out.String(), 3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	for i, r := range readers {
		r.waitFor(t, "hello-42", 30*time.Second)
		if !strings.Contains(r.out.String(), guest.ReadyMarker) {
			t.Errorf("reader %d missed the boot output:\n%s", i, tail(r.out.String(), 2000))
		}
	}

	// Ctrl+] leaves with exit 0 and the VM keeps running.
	if _, err := con.stdin.Write([]byte{0x1d}); err != nil {
		t.Fatal(err)
	}
	if code := con.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("detach: exit %d\n%s", code, con.out.String())
	}
	if s := c.vm("g1"); s.Status.Phase != "running" {
		t.Fatalf("after detach: %+v", s)
	}
	// The writer slot is free again.
	again := c.startConsole("vm", "console", "g1")
	again.waitFor(t, "Ctrl+]", 30*time.Second)

	// The agent dies mid-session: the client is told and the VM runs on;
	// once the agent is back, attaching again works.
	pid := c.vm("g1").Status.Pid
	c.agent.kill()
	if code := again.exitCode(t, 30*time.Second); code != 1 || !strings.Contains(again.out.String(), "agent went away") {
		t.Fatalf("console when the agent died: exit %d\n%s", code, tail(again.out.String(), 1000))
	}
	if !qemu.Alive(pid) {
		t.Fatal("QEMU died with the agent")
	}
	c.agent = startAgent(t, c.state)
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "re-adoption", func() bool {
		return strings.Contains(c.agent.out.String(), "re-adopted running vm")
	})
	again = c.startConsole("vm", "console", "g1")
	again.waitFor(t, "Ctrl+]", 30*time.Second)
	again.waitFor(t, "hello-42", 30*time.Second) // the replay of the persisted log

	// Stopping the VM ends the session with the VM-stopped reason (the
	// readers ended with the agent above).
	follower := c.startConsole("vm", "logs", "g1", "-f")
	follower.waitFor(t, "hello-42", 30*time.Second)
	c.mustCLI("vm", "stop", "g1", "--grace-period", "90s", "--wait")
	for _, p := range []*consoleProc{again, follower} {
		if code := p.exitCode(t, 30*time.Second); code != 0 {
			t.Errorf("session after stop: exit %d\n%s", code, tail(p.out.String(), 1000))
		}
	}
	if !strings.Contains(strings.ToLower(again.out.String()), "stopped") {
		t.Errorf("the console did not say the VM stopped:\n%s", tail(again.out.String(), 1000))
	}
	c.mustCLI("vm", "delete", "g1", "--wait")
}
