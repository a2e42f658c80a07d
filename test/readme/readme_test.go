//go:build readme

// Package readme follows README.md as a new user would: a fresh clone, the
// default DEV_DIR, `make dev` in the background and then the offline quick
// start's commands exactly as the README writes them (read from the README
// between its readme-test markers), then Ctrl-C and a second `make dev` that
// must find the VM that outlived the first.
//
// Run with `make test-readme` (part of `make check`): it needs root-free QEMU,
// git, make, busybox and the tools `make dev` installs.
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
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// defaultImagePort is the loopback port the README serves the guest on; the
// test moves it (and make dev's ports) to free ones so that it never collides
// with a make dev someone is running.
const defaultImagePort = "127.0.0.1:8000"

func TestREADMEOfflineQuickStart(t *testing.T) {
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

	imagePort := freePort(t, 1)
	portBase := freePort(t, 3)
	env := append(os.Environ(),
		"DEV_PORT_BASE="+strconv.Itoa(portBase),
		// Until the agent refuses an overlay that overlaps the host's
		// routes, its default supernet captures this machine's resolver:
		// the quick start's VM has no network, so the test runs without it.
		"DEV_AGENT_FLAGS=--overlay off",
		"npm_config_prefer_offline=true",
	)
	s := &session{t: t, dir: dir, env: env}
	t.Cleanup(s.cleanup)

	// Terminal 1: make dev, left running.
	s.startDev()

	// Terminal 2: the README's lines, as written.
	var bg *exec.Cmd
	for _, line := range lines {
		line = strings.ReplaceAll(line, defaultImagePort, "127.0.0.1:"+strconv.Itoa(imagePort))
		t.Logf("$ %s", line)
		switch {
		case strings.HasPrefix(line, "export "):
			kv := strings.TrimPrefix(line, "export ")
			s.env = append(s.env, kv)
		case strings.HasSuffix(line, "&"):
			bg = s.background(strings.TrimSpace(strings.TrimSuffix(line, "&")))
			waitPort(t, imagePort, bg)
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
	waitPort(t, imagePort, bg)
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

// session is one fresh clone with its make dev.
type session struct {
	t   *testing.T
	dir string
	env []string

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
	s.dev = exec.Command("make", "dev")
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
	if !strings.Contains(out, "--overlay off") {
		t.Fatalf("the banner does not show DEV_AGENT_FLAGS:\n%s", out)
	}
	if !strings.Contains(out, "note            network data plane off") {
		t.Fatalf("the banner does not say the data plane is off:\n%s", out)
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

// run runs one README line with bash in the clone, as a user's shell would.
func (s *session) run(line string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir, cmd.Env = s.dir, s.env
	out, err := cmd.CombinedOutput()
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
	deadline := time.Now().Add(within)
	for {
		out, err := s.run(line)
		if err == nil && strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: no %q within %s (err %v):\n%s", line, want, within, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// background starts line as a job of the user's shell; the caller kills it.
func (s *session) background(line string) *exec.Cmd {
	s.t.Helper()
	cmd := exec.Command("bash", "-c", "exec "+line)
	cmd.Dir, cmd.Env = s.dir, s.env
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
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir, cmd.Env = s.dir, s.env
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
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := s.run("bin/otherix vm get " + name + " -o json")
		if err == nil && json.Unmarshal([]byte(out), &vm) == nil && vm.Status.Phase == "running" && vm.Status.Pid > 0 {
			return vm.Status.Pid
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("vm %s is not reported running with a pid (err %v):\n%s", name, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// freePort returns a loopback port p such that p..p+n-1 are all free now.
func freePort(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := p+n <= 65535
		for i := 1; i < n && ok; i++ {
			l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err != nil {
				ok = false
				break
			}
			l2.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatalf("no %d free consecutive loopback ports", n)
	return 0
}

// waitPort waits until something accepts on 127.0.0.1:port.
func waitPort(t *testing.T, port int, cmd *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("nothing listens on 127.0.0.1:%d: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGone waits until pid no longer exists.
func waitGone(pid int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still runs after %s", pid, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// waitGroupGone waits until no process of group pgid is left.
func waitGroupGone(pgid int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of make dev's group %d still run %s after Ctrl-C: %s", pgid, within, groupMembers(pgid))
		}
		time.Sleep(100 * time.Millisecond)
	}
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
