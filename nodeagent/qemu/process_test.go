package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

func TestLifecycle(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	for _, f := range []string{PidFile, QMPSocket, SerialSocket} {
		if _, err := os.Stat(filepath.Join(s.RunDir, f)); err != nil {
			t.Errorf("after Start: %v", err)
		}
	}
	m := dial(t, p)
	ctx := ctxT(t)

	wantStatus := func(status string, running bool) {
		t.Helper()
		st, err := m.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != status || st.Running != running {
			t.Fatalf("status = %+v, want %s running=%v", st, status, running)
		}
	}
	wantStatus("prelaunch", false) // -S: nothing has run yet
	events := m.Events()
	steps := []struct {
		name   string
		do     func(context.Context) error
		status string
		run    bool
		event  string
	}{
		{"cont", m.Cont, "running", true, "RESUME"},
		{"stop", m.Stop, "paused", false, "STOP"},
		{"cont again", m.Cont, "running", true, "RESUME"},
		{"reset", m.SystemReset, "running", true, "RESET"},
	}
	for _, st := range steps {
		if err := st.do(ctx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		wantEvent(t, events, st.event)
		wantStatus(st.status, st.run)
	}

	if err := m.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	e := wantEvent(t, events, "SHUTDOWN")
	if e.Data["reason"] != "host-qmp-quit" {
		t.Errorf("SHUTDOWN data = %v, want reason host-qmp-quit", e.Data)
	}
	select {
	case e, ok := <-events:
		if ok {
			t.Errorf("event %s after SHUTDOWN, want the channel closed", e.Name)
		}
	case <-time.After(5 * time.Second):
		t.Error("events not closed 5s after quit")
	}
	if _, err := m.Status(ctx); !errors.Is(err, ErrMonitorClosed) {
		t.Errorf("Status after quit: %v, want ErrMonitorClosed", err)
	}
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited not closed 5s after quit")
	}
	if !procGone(p.Pid) {
		t.Errorf("/proc/%d still exists after Exited: not reaped", p.Pid)
	}
	waitNoZombies(t)
	if _, err := os.Stat(PidPath(s.RunDir)); !os.IsNotExist(err) {
		t.Errorf("pid file after quit: %v", err)
	}
}

func TestStartMissingDisk(t *testing.T) {
	s := testSpec(t)
	s.Disk = filepath.Join(filepath.Dir(s.Disk), "nope.qcow2")
	p, err := Start(context.Background(), s)
	if err == nil {
		stopProcess(t, p)
		t.Fatal("Start succeeded without a disk")
	}
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v (%T), want *StartError", err, err)
	}
	if !strings.Contains(err.Error(), "nope.qcow2") || !strings.Contains(strings.ToLower(err.Error()), "no such file") {
		t.Errorf("err = %q, want a message about nope.qcow2", err)
	}
	ents, _ := os.ReadDir(s.RunDir)
	for _, e := range ents {
		t.Errorf("left in run dir after failed start: %s", e.Name())
	}
	waitNoZombies(t)
}

func TestStartRefusesLiveRunDir(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	if _, err := Start(context.Background(), s); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Start: %v, want ErrAlreadyRunning", err)
	}
	if _, err := os.Stat(QMPPath(s.RunDir)); err != nil {
		t.Errorf("the refused Start disturbed the running VM: %v", err)
	}
	m := dial(t, p)
	if _, err := m.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestQEMUSurvivesItsStarter kills the process group of the "agent" that
// started QEMU, then re-adopts QEMU the way a restarted agent would.
func TestQEMUSurvivesItsStarter(t *testing.T) {
	s := testSpec(t)
	js, _ := json.Marshal(s)
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"="+string(js))
	helper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "started ") {
		t.Fatalf("helper: %q, %v", line, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "started ")))
	t.Cleanup(func() { // in case Attach fails below
		if p, err := Attach(s.RunDir); err == nil {
			stopProcess(t, p)
		}
	})

	// What ^C or a service manager's stop does to the agent.
	if err := syscall.Kill(-helper.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()

	p, err := Attach(s.RunDir)
	if err != nil {
		t.Fatalf("Attach after the starter died: %v", err)
	}
	if p.Pid != pid {
		t.Errorf("attached pid %d, helper started %d", p.Pid, pid)
	}
	m := dial(t, p)
	ctx := ctxT(t)
	if st, err := m.Status(ctx); err != nil || st.Status != "prelaunch" {
		t.Fatalf("status %+v, %v", st, err)
	}
	if err := m.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited not closed 5s after quit")
	}
	if !procGone(p.Pid) {
		t.Errorf("/proc/%d still exists: the adopted QEMU was not reaped", p.Pid)
	}
	p.Close()
	waitNoZombies(t)
}

func TestAttachStale(t *testing.T) {
	s := testSpec(t)
	other := testSpec(t)
	live := startVM(t, other)

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pid  string // "" for no pid file
	}{
		{"no pid file", ""},
		{"garbage", "not-a-pid\n"},
		{"not qemu (the test itself)", strconv.Itoa(os.Getpid())},
		{"dead pid", strconv.Itoa(dead.Process.Pid)},
		{"qemu of another vm", strconv.Itoa(live.Pid)},
		{"live qemu, other start time", strconv.Itoa(live.Pid) + " 1"},
		{"three fields", strconv.Itoa(live.Pid) + " 1 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(s.RunDir)
			if err := os.MkdirAll(s.RunDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.pid != "" {
				if err := os.WriteFile(PidPath(s.RunDir), []byte(tt.pid), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			p, err := Attach(s.RunDir)
			if !errors.Is(err, ErrNotRunning) {
				if p != nil {
					p.Close()
				}
				t.Fatalf("Attach = %v, want ErrNotRunning", err)
			}
		})
	}
	// A stale pid file must not stop a new Start.
	p := startVM(t, s)
	if p.Pid == live.Pid {
		t.Fatal("Start adopted another VM's QEMU")
	}
}

func TestConcurrentCommands(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			if i%10 == 0 {
				errs <- m.Cont(ctx)
				return
			}
			_, err := m.Status(ctx)
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestQMPErrorClass(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	m := dial(t, p)
	_, err := m.run(ctxT(t), "no-such-command", map[string]json.RawMessage{"execute": json.RawMessage(`"no-such-command"`)})
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "no-such-command" {
		t.Fatalf("err = %#v, want QMPError CommandNotFound", err)
	}
	// The connection is still usable after an error.
	if _, err := m.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestDialWaitsForFirstClient: QEMU serves one QMP client at a time, so a
// second Dial must honour its ctx rather than hang on the greeting.
func TestDialWaitsForFirstClient(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	first := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if m, err := Dial(ctx, QMPPath(p.RunDir)); !errors.Is(err, context.DeadlineExceeded) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("second Dial: %v, want deadline exceeded", err)
	}
	first.Close()
	second := dial(t, p)
	if _, err := second.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestPowerdownEvent(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	events := m.Events()
	late := m.Events() // a second subscriber sees the same events
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	// No guest OS handles ACPI here, so QEMU keeps running.
	wantEvent(t, events, "POWERDOWN")
	wantEvent(t, late, "POWERDOWN")
	if st, err := m.Status(ctx); err != nil || !st.Running {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// qemuUser is the unprivileged user the QEMU tests run as: the agent's
// default when it exists, else nobody. Not root: skipped.
func qemuUser(t *testing.T) *User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to start QEMU as another user")
	}
	for _, name := range []string{DefaultUser, "nobody"} {
		if u, err := LookupUser(name); err == nil {
			return u
		}
	}
	t.Skip("neither " + DefaultUser + " nor nobody exists")
	return nil
}

// TestSandboxAndUser: QEMU runs as the unprivileged user from exec on,
// under seccomp, and boots from a disk in a directory only root can enter.
func TestSandboxAndUser(t *testing.T) {
	s := testSpec(t)
	s.Sandbox = true
	s.User = qemuUser(t)
	if fi, err := os.Stat(filepath.Dir(s.Disk)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("test dir must be private: %v %v", fi.Mode(), err)
	}
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || !st.Running {
		t.Fatalf("status %+v, %v", st, err)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(status), "\n")
	if !slices.Contains(lines, "Seccomp:\t2") {
		t.Error("QEMU is not under a seccomp filter")
	}
	want := "Uid:\t" + strings.Repeat(strconv.Itoa(int(s.User.Uid))+"\t", 3) + strconv.Itoa(int(s.User.Uid))
	if !slices.Contains(lines, want) {
		t.Errorf("QEMU's uids are not all %d: %q", s.User.Uid, lines)
	}
}

// TestSandboxDeniesSpawn: a QEMU asked to run a program (a migration to
// exec:, which forks a shell) must not be able to. Under the old sandbox
// (obsolete and resourcecontrol only) the shell ran and created the file.
func TestSandboxDeniesSpawn(t *testing.T) {
	s := testSpec(t)
	s.Sandbox = true
	p := startVM(t, s)
	m := dial(t, p)
	marker := filepath.Join(t.TempDir(), "spawned")
	ctx := ctxT(t)
	_, _ = qmpRaw(ctx, m, "human-monitor-command", map[string]any{"command-line": "migrate \"exec:touch " + marker + "\""})
	select {
	case <-p.Exited(): // killed by seccomp at fork
	case <-time.After(5 * time.Second):
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("QEMU spawned a program despite spawn=deny")
	}
}

// TestStartIgnoresHeaderBacking: the VM disk's header names a backing file
// (a compromised QEMU can write any name there), and QEMU must not open
// it: only the base the agent names, or none.
func TestStartIgnoresHeaderBacking(t *testing.T) {
	s := testSpec(t)
	dir := filepath.Dir(s.Disk)
	secret := filepath.Join(dir, "host-secret.raw")
	if err := os.WriteFile(secret, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	if err := os.Remove(s.Disk); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", secret, s.Disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	for _, tt := range []struct{ name, base, format, want string }{
		{"no base", "", "", ""},
		{"agent's base", base, "qcow2", "/dev/fdset/1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := s
			s.Base, s.BaseFormat = tt.base, tt.format
			m := dial(t, startVM(t, s))
			b, err := qmpRaw(ctxT(t), m, "query-named-block-nodes", nil)
			if err != nil {
				t.Fatal(err)
			}
			var nodes []struct {
				Name string `json:"node-name"`
				File string `json:"file"`
			}
			if err := json.Unmarshal(b, &nodes); err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, n := range nodes {
				files = append(files, n.File)
				if strings.Contains(n.File, "host-secret") {
					t.Errorf("QEMU opened the header's backing file as node %s: %s", n.Name, n.File)
				}
			}
			if tt.want != "" && !slices.Contains(files, tt.want) {
				t.Errorf("base %s not attached: %v", tt.want, files)
			}
		})
	}
}

// TestStartRefusesExternalDataFile: a VM disk whose header sends its data
// to another file is refused before QEMU sees it.
func TestStartRefusesExternalDataFile(t *testing.T) {
	s := testSpec(t)
	data := filepath.Join(filepath.Dir(s.Disk), "data.raw")
	if err := os.Remove(s.Disk); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data, s.Disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	p, err := Start(context.Background(), s)
	if err == nil {
		stopProcess(t, p)
		t.Fatal("Start accepted a disk with an external data file")
	}
	if !errors.Is(err, ErrUnsafeImage) {
		t.Fatalf("err = %v, want ErrUnsafeImage", err)
	}
}

// TestStartCancelled cancels Start at points through QEMU's initialisation:
// whatever had been forked must be gone, with no files left behind.
func TestStartCancelled(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 40 * time.Millisecond} {
		t.Run(d.String(), func(t *testing.T) {
			s := testSpec(t)
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			p, err := Start(ctx, s)
			if err == nil {
				stopProcess(t, p)
				t.Skipf("QEMU initialised within %v", d)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want deadline exceeded", err)
			}
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				pid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
				if bytes.Contains(cmdline, []byte("guest="+s.ID+",")) {
					if st, err := readStat(pid); err == nil && st.state != 'Z' {
						t.Errorf("pid %d of the cancelled start is alive", pid)
					}
				}
			}
			ents, _ = os.ReadDir(s.RunDir)
			for _, e := range ents {
				t.Errorf("left in run dir after cancelled start: %s", e.Name())
			}
		})
	}
	waitNoZombies(t)
}

// TestAlive: a running process is alive; one that exited is not, neither
// while it is a zombie nor once reaped.
func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) || Alive(0) || Alive(-1) {
		t.Fatal("Alive of self, 0, -1")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Unreaped, it turns into a zombie: poll until it has exited.
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "exited child "+strconv.Itoa(pid)+" to be not alive", func() bool { return !Alive(pid) })
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if Alive(pid) {
		t.Fatalf("reaped child %d alive", pid)
	}
}

// qmpRaw runs a command the Monitor has no typed method for.
func qmpRaw(ctx context.Context, m *Monitor, name string, args map[string]any) (json.RawMessage, error) {
	cmd := map[string]json.RawMessage{}
	cmd["execute"], _ = json.Marshal(name)
	if args != nil {
		cmd["arguments"], _ = json.Marshal(args)
	}
	return m.run(ctx, name, cmd)
}
