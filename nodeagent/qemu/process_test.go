package qemu

import (
	"bufio"
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
	if !strings.Contains(err.Error(), "nope.qcow2") || !strings.Contains(err.Error(), "No such file") {
		t.Errorf("err = %q, want QEMU's own message about nope.qcow2", err)
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

func TestSandboxAndRunAs(t *testing.T) {
	s := testSpec(t)
	s.Sandbox = true
	if os.Geteuid() == 0 {
		if _, err := exec.Command("id", "-u", "nobody").Output(); err == nil {
			s.RunAsUser = "nobody"
		}
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
	if !slices.Contains(strings.Split(string(status), "\n"), "Seccomp:\t2") {
		t.Error("QEMU is not under a seccomp filter")
	}
	if s.RunAsUser != "" {
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/"+strconv.Itoa(p.Pid), &st); err != nil || st.Uid == 0 {
			t.Errorf("QEMU still runs as root (%v)", err)
		}
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
				if pid, err := strconv.Atoi(e.Name()); err == nil && isOurQEMU(pid, s.RunDir) {
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
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("exited child %d still alive", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if Alive(pid) {
		t.Fatalf("reaped child %d alive", pid)
	}
}
