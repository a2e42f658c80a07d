//go:build readme

// Package readme follows README.md as a new user would: a fresh clone, the
// default DEV_DIR, `make dev` in the background and then the offline quick
// start's commands exactly as the README writes them (read from the README
// between its readme-test markers), then Ctrl-C and a second `make dev` that
// must find the VM that outlived the first.
//
// make dev runs the agent with its default flags, so as root its network
// data plane is on: WireGuard interface, nftables tables, sysctls. The whole
// scenario therefore runs inside a network namespace the test creates, where
// all of that lives and dies with the namespace; the test checks the host
// namespace gained none of it.
//
// Run with `make test-readme` (part of `make check`): it needs root, iproute2,
// git, make, busybox, QEMU and the tools `make dev` installs.
package readme

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/otherix/otherix/internal/netnstest"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// imagePort is the loopback port the README serves the guest on. The test's
// namespace has a loopback of its own, so the README's ports (this one and
// make dev's defaults) are used as written: no make dev running elsewhere on
// this machine can hold them.
const imagePort = 8000

// wgSocketDir is where userspace WireGuard (wireguard-go) puts its UAPI
// sockets, named after the interface. It is a directory of the host's file
// system shared by every namespace, so make dev gets a private one: a
// make dev on the host (or another run of this test) owns oxwg0.sock there.
const wgSocketDir = "/var/run/wireguard"

func TestREADMEOfflineQuickStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: make dev's agent runs its network data plane as root, which this test confines to a network namespace it creates")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs iproute2's ip to create the network namespace the quick start runs in: %v", err)
	}
	for _, tool := range []string{"git", "make", "busybox", "qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (scripts/install-deps.sh installs it): %v", tool, err)
		}
	}
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("find the repository: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "otherix")
	if out, err := exec.Command("git", "clone", "-q", strings.TrimSpace(string(root)), dir).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	lines := readmeLines(t, filepath.Join(dir, "README.md"))

	// make dev's own settings only: no DEV_* variable, no DEV_AGENT_FLAGS.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DEV_") && !strings.HasPrefix(kv, "OTHERIX_") {
			env = append(env, kv)
		}
	}
	env = append(env, "npm_config_prefer_offline=true")

	// Cleanups run last registered first: the processes go, then the
	// namespace, then the host is checked for leftovers.
	host := snapshotHost(t)
	t.Cleanup(func() { host.checkLeftovers(t) })
	if _, err := os.Stat(wgSocketDir); errors.Is(err, os.ErrNotExist) {
		// The mount point of make dev's private socket dir; a host
		// agent would create it too. Removed if still empty.
		if err := os.MkdirAll(wgSocketDir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(wgSocketDir) })
	}
	// The namespace has only lo. It gets no /etc/netns/<name>/resolv.conf,
	// so ip netns exec leaves the host's: the agent checks its overlay
	// supernet against this machine's real resolvers, as on a user's host
	// (nothing in the quick start resolves a name).
	ns := netnstest.New(t, "otx-readme", "dev")
	t.Cleanup(func() { waitNetnsEmpty(t, ns) })
	s := &session{t: t, dir: dir, env: env, ns: ns}
	t.Cleanup(s.cleanup)

	// Terminal 1: make dev, left running.
	banner := s.startDev()
	node := nodeName(t, banner)
	s.checkOverlayOn(node, host)

	// Terminal 2: the README's lines, as written.
	var bg *exec.Cmd
	for _, line := range lines {
		t.Logf("$ %s", line)
		switch {
		case strings.HasPrefix(line, "export "):
			kv := strings.TrimPrefix(line, "export ")
			s.env = append(s.env, kv)
		case strings.HasSuffix(line, "&"):
			bg = s.background(strings.TrimSpace(strings.TrimSuffix(line, "&")))
			s.waitPort(imagePort, bg)
		case line == "kill %1":
			if bg == nil {
				t.Fatal("kill %1 with no background job")
			}
			_ = bg.Process.Kill()
			_ = bg.Wait()
			bg = nil
		case strings.Contains(line, "test/guest/build.sh"):
			s.withGuestLock(line, func() { s.mustRun(line) })
		case strings.Contains(line, " vm console "):
			s.console(line)
		case strings.Contains(line, " vm logs "):
			// create --wait returns when QEMU runs; the guest then boots
			// (~4 s under TCG).
			s.eventually(line, "OTHERIX-GUEST-READY", 2*time.Minute)
		case strings.Contains(line, " node list"):
			s.eventually(line, " ready", time.Minute)
		default:
			out := s.mustRun(line)
			if strings.Contains(line, " vm list") && !strings.Contains(out, "running") {
				t.Fatalf("%s: no running VM:\n%s", line, out)
			}
		}
	}
	if bg != nil {
		t.Fatal("the README leaves its web server running")
	}
	if out := s.mustRun("bin/otherix vm list"); strings.Contains(out, "demo") {
		t.Fatalf("demo still listed after delete:\n%s", out)
	}

	// A VM outlives Ctrl-C on make dev and is re-adopted by the next one.
	bg = s.background(fmt.Sprintf("busybox httpd -f -p 127.0.0.1:%d -h ~/.cache/otherix/test-guest", imagePort))
	s.waitPort(imagePort, bg)
	s.mustRun(fmt.Sprintf("bin/otherix vm create keep --memory 256Mi --disk 1Gi --wait --image http://127.0.0.1:%d/guest.qcow2", imagePort))
	_ = bg.Process.Kill()
	_ = bg.Wait()
	// Booted, so that its ACPI handler answers the stop below.
	s.eventually("bin/otherix vm logs keep", "OTHERIX-GUEST-READY", 2*time.Minute)
	pid := s.vmPid("keep")
	s.stopDev()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("QEMU (pid %d) did not survive Ctrl-C on make dev: %v", pid, err)
	}
	out := s.startDev()
	if strings.Contains(out, "enrolled node") {
		t.Fatalf("the second make dev enrolled the node again:\n%s", out)
	}
	if got := s.vmPid("keep"); got != pid {
		t.Fatalf("after the second make dev: QEMU pid %d, want the re-adopted %d", got, pid)
	}
	s.checkOverlayOn(node, host)
	s.mustRun("bin/otherix vm stop keep --wait")
	if err := waitGone(pid, 30*time.Second); err != nil {
		t.Fatalf("stop after re-adoption: %v", err)
	}
	s.mustRun("bin/otherix vm delete keep --force --wait")
	s.stopDev()
}

// readmeLines returns the shell lines of the README's offline quick start,
// without their trailing comments.
func readmeLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	begin := strings.Index(text, "<!-- readme-test:offline begin")
	end := strings.Index(text, "<!-- readme-test:offline end -->")
	if begin < 0 || end < begin {
		t.Fatal("README.md has no readme-test:offline block")
	}
	comment := regexp.MustCompile(`\s+#\s.*$`)
	var lines []string
	fenced := false
	for _, l := range strings.Split(text[begin:end], "\n") {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
			continue
		}
		if l = strings.TrimSpace(comment.ReplaceAllString(l, "")); fenced && l != "" {
			lines = append(lines, l)
		}
	}
	for _, want := range []string{"test/guest/build.sh", " vm create ", " vm logs ", " vm console ", " vm stop ", " vm start ", " vm delete "} {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Fatalf("the README's offline quick start lost its %q step: %q", strings.TrimSpace(want), lines)
		}
	}
	return lines
}

// session is one fresh clone with its make dev, every command of which runs
// in the network namespace ns.
type session struct {
	t   *testing.T
	dir string
	env []string
	ns  string

	dev    *exec.Cmd
	devOut *lockedBuffer
	devErr chan error
}

// lockedBuffer collects make dev's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDev runs make dev in its own process group, as a terminal would, and
// waits for its banner; it returns make dev's output up to then.
func (s *session) startDev() string {
	t := s.t
	t.Helper()
	s.devOut = &lockedBuffer{}
	// ip netns exec enters a mount namespace of its own (slave to the
	// host's), so the tmpfs over the WireGuard socket dir is seen by this
	// make dev's agent only and goes away with it.
	s.dev = s.command(context.Background(), "sh", "-c",
		"mount -t tmpfs -o mode=0755 otherix-readme "+wgSocketDir+" && exec make dev")
	s.dev.Dir, s.dev.Env = s.dir, s.env
	s.dev.Stdout, s.dev.Stderr = s.devOut, s.devOut
	s.dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.dev.Start(); err != nil {
		t.Fatal(err)
	}
	s.devErr = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(s.dev, s.devErr)
	// A fresh clone builds first (npm ci, go build).
	deadline := time.Now().Add(8 * time.Minute)
	for !strings.Contains(s.devOut.String(), "Ctrl-C stops the API and the agent.") {
		select {
		case err := <-s.devErr:
			s.dev = nil
			t.Fatalf("make dev exited before its banner: %v\n%s", err, s.devOut.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make dev printed no banner in time:\n%s", s.devOut.String())
		}
	}
	out := s.devOut.String()
	// make dev's defaults, as the README runs it: the data plane on and
	// nothing wrong with the node.
	for _, flag := range []string{"--data-plane", "--overlay"} {
		if strings.Contains(out, flag) {
			t.Fatalf("make dev ran the agent with %s; the README's make dev has none:\n%s", flag, out)
		}
	}
	for _, bad := range []string{"network data plane off", messages.NodeConditionHostNetworkConflict} {
		if strings.Contains(out, bad) {
			t.Fatalf("make dev's banner says %q:\n%s", bad, out)
		}
	}
	return out
}

// stopDev is Ctrl-C in make dev's terminal: SIGINT to its process group.
func (s *session) stopDev() {
	t := s.t
	t.Helper()
	pgid := s.dev.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.devErr:
	case <-time.After(time.Minute):
		t.Fatalf("make dev did not stop within a minute of Ctrl-C:\n%s", s.devOut.String())
	}
	s.dev = nil
	// Ctrl-C stops the two daemons: nothing of the group is left.
	if err := waitGroupGone(pgid, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// cleanup stops what a failed test left: make dev and every QEMU of the
// clone's agent.
func (s *session) cleanup() {
	if s.dev != nil {
		_ = syscall.Kill(-s.dev.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.devErr:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-s.dev.Process.Pid, syscall.SIGKILL)
		}
		if s.t.Failed() {
			for _, f := range []string{"api.log", "agent.log"} {
				b, _ := os.ReadFile(filepath.Join(s.dir, ".dev", f))
				s.t.Logf("%s (last 4 KiB):\n%s", f, tail(b, 4096))
			}
		}
	}
	// dev.sh moves the run dir to a short one when the clone's path is deep
	// (see scripts/dev.sh); both places are searched and the moved one
	// removed.
	sum := sha256.Sum256([]byte(filepath.Join(s.dir, ".dev")))
	shortRun := fmt.Sprintf("/tmp/otherix-dev-%d-%s", os.Getuid(), hex.EncodeToString(sum[:])[:12])
	defer os.RemoveAll(shortRun)
	pids, _ := filepath.Glob(filepath.Join(s.dir, ".dev", "agent", "run", "*", "qemu.pid"))
	more, _ := filepath.Glob(filepath.Join(shortRun, "*", "qemu.pid"))
	for _, p := range append(pids, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmdline, []byte(s.dir)) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// command is args run in the clone, inside the namespace. ip netns exec
// execs args (no process of its own stays), so the pid is the command's.
func (s *session) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.ns}, args...)...)
	cmd.Dir, cmd.Env = s.dir, s.env
	return cmd
}

// run runs one README line with bash in the clone, as a user's shell would.
func (s *session) run(line string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := s.command(ctx, "bash", "-c", line).CombinedOutput()
	return string(out), err
}

func (s *session) mustRun(line string) string {
	s.t.Helper()
	out, err := s.run(line)
	if err != nil {
		s.t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

// eventually runs line until its output contains want.
func (s *session) eventually(line, want string, within time.Duration) {
	s.t.Helper()
	var out string
	var err error
	if !testutil.Until(within, 500*time.Millisecond, func() bool {
		out, err = s.run(line)
		return err == nil && strings.Contains(out, want)
	}) {
		s.t.Fatalf("%s: no %q within %s (err %v):\n%s", line, want, within, err, out)
	}
}

// background starts line as a job of the user's shell; the caller kills it.
func (s *session) background(line string) *exec.Cmd {
	s.t.Helper()
	cmd := s.command(context.Background(), "bash", "-c", "exec "+line)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// withGuestLock holds the flock test/guest's Go helper takes around
// build.sh, so the README's build never races an e2e test's.
func (s *session) withGuestLock(line string, f func()) {
	s.t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		s.t.Fatal(err)
	}
	dir := filepath.Join(home, ".cache", "otherix", "test-guest")
	if !strings.Contains(line, "~/.cache/otherix/test-guest") {
		s.t.Fatalf("the README builds the guest elsewhere than %s: %s", dir, line)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		s.t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	f()
}

// console runs the README's console line with a pipe for stdin: a command
// whose answer only the guest's shell can compute, then Ctrl+] to leave.
func (s *session) console(line string) {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := s.command(ctx, "bash", "-c", line)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	want := "readme-" + strconv.Itoa(6*7) + "-ok"
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), want) {
		// Repeated: the first keystrokes may reach the guest before the
		// session is attached.
		if _, err := io.WriteString(stdin, "echo readme-$((6*7))-ok\n"); err != nil {
			t.Fatalf("console stdin: %v\n%s", err, out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("%s ended before the guest answered: %v\n%s", line, err, out.String())
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the guest's shell never answered:\n%s", line, out.String())
		}
	}
	if _, err := stdin.Write([]byte{0x1d}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: Ctrl+] exit: %v\n%s", line, err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Ctrl+] did not detach:\n%s", line, out.String())
	}
}

// vmPid is the QEMU pid the API reports for a running VM.
func (s *session) vmPid(name string) int {
	s.t.Helper()
	var vm struct {
		Status struct {
			Phase string `json:"phase"`
			Pid   int    `json:"pid"`
		} `json:"status"`
	}
	var out string
	var err error
	if !testutil.Until(time.Minute, 300*time.Millisecond, func() bool {
		out, err = s.run("bin/otherix vm get " + name + " -o json")
		return err == nil && json.Unmarshal([]byte(out), &vm) == nil && vm.Status.Phase == "running" && vm.Status.Pid > 0
	}) {
		s.t.Fatalf("vm %s is not reported running with a pid (err %v):\n%s", name, err, out)
	}
	return vm.Status.Pid
}

// waitPort waits until something accepts on 127.0.0.1:port in the
// namespace. The probe is a process in the namespace: a thread of the test
// that entered it could keep the namespace alive after its deletion.
func (s *session) waitPort(port int, cmd *exec.Cmd) {
	t := s.t
	t.Helper()
	var out []byte
	var err error
	listening := func() bool {
		out, err = s.command(context.Background(), "bash", "-c",
			fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)).CombinedOutput()
		if err != nil && cmd.ProcessState != nil {
			t.Fatalf("nothing listens on 127.0.0.1:%d in %s: %v %s", port, s.ns, err, out)
		}
		return err == nil
	}
	if !testutil.Until(15*time.Second, 200*time.Millisecond, listening) {
		t.Fatalf("nothing listens on 127.0.0.1:%d in %s: %v %s", port, s.ns, err, out)
	}
}

// waitGone waits until pid no longer exists.
func waitGone(pid int, within time.Duration) error {
	if !testutil.Until(within, 100*time.Millisecond, func() bool { return syscall.Kill(pid, 0) != nil }) {
		return fmt.Errorf("pid %d still runs after %s", pid, within)
	}
	return nil
}

// waitGroupGone waits until no process of group pgid is left.
func waitGroupGone(pgid int, within time.Duration) error {
	if !testutil.Until(within, 100*time.Millisecond, func() bool { return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) }) {
		return fmt.Errorf("processes of make dev's group %d still run %s after Ctrl-C: %s", pgid, within, groupMembers(pgid))
	}
	return nil
}

func groupMembers(pgid int) string {
	out, _ := exec.Command("ps", "-o", "pid,pgid,args", "-g", strconv.Itoa(pgid)).Output()
	sc := bufio.NewScanner(bytes.NewReader(out))
	var b strings.Builder
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}

// nodeName is the node make dev's banner names.
func nodeName(t *testing.T, banner string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  node +(\S+) \(`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("make dev's banner names no node:\n%s", banner)
	}
	return m[1]
}

// checkOverlayOn asserts that make dev's agent runs its network data plane:
// the node reports a reconciled overlay and a tunnel address, no host
// network conflict, and the namespace holds the interface carrying that
// address, which the host does not. The namespace's links are recorded for
// the leftover check.
func (s *session) checkOverlayOn(node string, host *hostState) {
	t := s.t
	t.Helper()
	var n messages.Node
	var out string
	var err error
	if !testutil.Until(2*time.Minute, 500*time.Millisecond, func() bool {
		out, err = s.run("OTHERIX_CONFIG=.dev/otherix-config bin/otherix node get " + node + " -o json")
		n = messages.Node{}
		if err == nil && json.Unmarshal([]byte(out), &n) == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == messages.NodeConditionHostNetworkConflict && c.Status == "True" {
					t.Fatalf("the agent refused its overlay in the test's namespace: %s: %s", c.Reason, c.Message)
				}
			}
			if o := n.Status.Overlay; o != nil && o.Reconciled && o.Error == "" && n.TunnelIP != "" {
				return true
			}
		}
		if b, _ := os.ReadFile(filepath.Join(s.dir, ".dev", "agent.log")); bytes.Contains(b, []byte("network data plane off")) {
			t.Fatalf("the agent runs with its network data plane off:\n%s", tail(b, 4096))
		}
		return false
	}) {
		t.Fatalf("node %s reports no reconciled overlay with a tunnel address (err %v):\n%s", node, err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(s.dir, ".dev", "agent.log")); !bytes.Contains(b, []byte("network data plane on")) {
		t.Fatalf("agent.log does not say the network data plane is on:\n%s", tail(b, 4096))
	}
	tunnelIP, err := netip.ParseAddr(n.TunnelIP)
	if err != nil {
		t.Fatalf("node %s: tunnel_ip %q: %v", node, n.TunnelIP, err)
	}
	links := nsLinks(t, s.ns)
	carrier := ""
	for name, addrs := range links {
		host.nsLinks[name] = true
		for _, a := range addrs {
			if a == tunnelIP {
				carrier = name
			}
		}
	}
	if carrier == "" {
		t.Fatalf("no link in %s carries the node's tunnel address %s: %v", s.ns, tunnelIP, links)
	}
	tbs := nsTables(t, s.ns)
	for _, tb := range tbs {
		host.nsTables[tb] = true
	}
	t.Logf("data plane on: node %s, tunnel %s on %s (wireguard %s); in %s: links %v, nftables tables %q",
		node, tunnelIP, carrier, n.Status.Overlay.WireGuard, s.ns, slices.Sorted(maps.Keys(links)), tbs)
	host.checkHostClean(t, "while make dev runs")
}

// hostState is what the host namespace held before the test, and what the
// test's namespace held while make dev ran: the leftover checks compare the
// host against both.
type hostState struct {
	links     map[string]bool
	tables    map[string]bool
	wgSockets map[string]bool
	ipForward string

	nsLinks  map[string]bool
	nsTables map[string]bool
}

func snapshotHost(t *testing.T) *hostState {
	t.Helper()
	h := &hostState{links: hostLinks(t), tables: tables(t, -1), wgSockets: map[string]bool{},
		nsLinks: map[string]bool{}, nsTables: map[string]bool{}}
	entries, _ := os.ReadDir(wgSocketDir)
	for _, e := range entries {
		h.wgSockets[e.Name()] = true
	}
	h.ipForward = readTrim(t, "/proc/sys/net/ipv4/ip_forward")
	return h
}

// checkHostClean fails t if the host namespace gained any link or nftables
// table that make dev's namespace has, an otherix table, a WireGuard socket
// for one of those links, or a changed ip_forward. Other tests on this
// machine may add links of their own meanwhile: only names the agent used
// count.
func (h *hostState) checkHostClean(t *testing.T, when string) {
	t.Helper()
	for name := range hostLinks(t) {
		if h.nsLinks[name] && !h.links[name] {
			t.Errorf("%s: the host namespace has link %s, which make dev's agent made in the test's namespace", when, name)
		}
	}
	for tb := range tables(t, -1) {
		if !h.tables[tb] && (h.nsTables[tb] || strings.HasSuffix(tb, " otherix")) {
			t.Errorf("%s: the host namespace has nftables table %s, which it did not have before", when, tb)
		}
	}
	entries, _ := os.ReadDir(wgSocketDir)
	for _, e := range entries {
		if !h.wgSockets[e.Name()] && h.nsLinks[strings.TrimSuffix(e.Name(), ".sock")] {
			t.Errorf("%s: %s/%s is on the host", when, wgSocketDir, e.Name())
		}
	}
	if got := readTrim(t, "/proc/sys/net/ipv4/ip_forward"); got != h.ipForward {
		t.Errorf("%s: the host's net.ipv4.ip_forward is %s, was %s", when, got, h.ipForward)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(b, []byte(" otherix-readme ")) {
		t.Errorf("%s: make dev's private %s is mounted on the host", when, wgSocketDir)
	}
}

// checkLeftovers runs after the namespace is deleted.
func (h *hostState) checkLeftovers(t *testing.T) {
	t.Helper()
	if len(h.nsLinks) == 0 {
		// The test stopped before the data plane was seen; still check
		// for the agent's default names.
		h.nsLinks["oxwg0"] = true
	}
	h.checkHostClean(t, "after the test")
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func hostLinks(t *testing.T) map[string]bool {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list the host's links: %v", err)
	}
	out := map[string]bool{}
	for _, l := range ls {
		out[l.Attrs().Name] = true
	}
	return out
}

// nsLinks lists the links of namespace ns but lo, with their IPv4
// addresses.
func nsLinks(t *testing.T, ns string) map[string][]netip.Addr {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	ls, err := nl.LinkList()
	if err != nil {
		t.Fatalf("list the links of %s: %v", ns, err)
	}
	out := map[string][]netip.Addr{}
	for _, l := range ls {
		if l.Attrs().Name == "lo" {
			continue
		}
		addrs, err := nl.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		out[l.Attrs().Name] = nil
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
				out[l.Attrs().Name] = append(out[l.Attrs().Name], ip)
			}
		}
	}
	return out
}

// nsTables lists the nftables tables of namespace ns.
func nsTables(t *testing.T, ns string) []string {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	return slices.Collect(maps.Keys(tables(t, int(h))))
}

// tables lists nftables tables as "FAMILY NAME", of the namespace nsFd or,
// with -1, of the host (the test's own namespace).
func tables(t *testing.T, nsFd int) map[string]bool {
	t.Helper()
	var opts []nftables.ConnOption
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTables()
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	out := map[string]bool{}
	for _, tb := range ts {
		out[fmt.Sprintf("%d %s", tb.Family, tb.Name)] = true
	}
	return out
}

// waitNetnsEmpty waits until no process is left in namespace ns, so that
// deleting it frees everything in it. Only the test's own processes can be
// there; any still left after a minute is reported and killed by pid.
func waitNetnsEmpty(t *testing.T, ns string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
		t.Errorf("stat namespace %s: %v", ns, err)
		return
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	members := func() []int {
		var pids []int
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			pid, err := strconv.Atoi(d.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == want {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	var pids []int
	if testutil.Until(time.Minute, 200*time.Millisecond, func() bool { pids = members(); return len(pids) == 0 }) {
		return
	}
	for _, pid := range pids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("pid %d still runs in %s at the end: %s", pid, ns, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range pids {
		_ = waitGone(pid, 10*time.Second)
	}
}
