package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// helperEnv makes the test binary act as a tiny agent that starts one QEMU
// and then waits to be killed (see TestQEMUSurvivesItsStarter).
const helperEnv = "OTHERIX_QEMU_TEST_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(runHelper(spec))
	}
	// Like the agent: QEMUs are our children, and a QEMU a helper started
	// becomes ours when the helper dies, so the tests can check that they
	// are reaped.
	if err := SetChildSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ReapOrphans(ctx) }()
	code := m.Run()
	cancel()
	<-done
	os.Exit(code)
}

func runHelper(specJSON string) int {
	var s Spec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Println("error:", err)
		return 2
	}
	if err := SetChildSubreaper(); err != nil {
		fmt.Println("error:", err)
		return 2
	}
	go ReapOrphans(context.Background()) // lives until the helper is killed
	p, err := Start(context.Background(), s)
	if err != nil {
		fmt.Println("error:", err)
		return 2
	}
	fmt.Printf("started %d\n", p.Pid)
	select {} // until signalled
}

// needQEMU skips without qemu-system-x86_64, unless OTHERIX_REQUIRE_QEMU=1
// says this run exists to exercise it.
func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		if _, err := exec.LookPath("qemu-img"); err == nil {
			return
		}
	}
	if os.Getenv("OTHERIX_REQUIRE_QEMU") == "1" {
		t.Fatal("qemu-system-x86_64 and qemu-img are required (OTHERIX_REQUIRE_QEMU=1) but not in PATH")
	}
	t.Skip("qemu-system-x86_64 or qemu-img not in PATH; install qemu-system-x86 and qemu-utils to run")
}

var vmSeq atomic.Int64

// testSpec returns a TCG spec with a fresh 64 MiB qcow2 and a run dir short
// enough for unix socket paths (t.TempDir's can exceed 108 bytes).
func testSpec(t *testing.T) Spec {
	t.Helper()
	needQEMU(t)
	dir, err := os.MkdirTemp("", "oq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The directory stays 0700: QEMU, running as another user, must get
	// by on the descriptors the agent hands it.
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	return Spec{
		ID:        "t" + strconv.FormatInt(vmSeq.Add(1), 10),
		Accel:     "tcg",
		CPUs:      1,
		MemoryMiB: 128,
		Disk:      disk,
		RunDir:    filepath.Join(dir, "run"),
	}
}

// startVM starts s and kills the QEMU at cleanup, whatever the test did.
func startVM(t *testing.T, s Spec) *Process {
	t.Helper()
	p, err := Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(t, p) })
	return p
}

func stopProcess(t *testing.T, p *Process) {
	t.Helper()
	if err := p.Kill(); err != nil {
		t.Errorf("kill: %v", err)
	}
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Errorf("qemu pid %d still alive 10s after SIGKILL", p.Pid)
	}
	p.Close()
}

func dial(t *testing.T, p *Process) *Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := Dial(ctx, QMPPath(p.RunDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// zombieChildren lists our children that exited and were never reaped.
func zombieChildren(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var z []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err == nil && st.ppid == os.Getpid() && st.state == 'Z' {
			z = append(z, pid)
		}
	}
	return z
}

// waitNoZombies allows a child that is exiting right now (another test's
// exec) to be reaped by its owner. A leaked zombie stays one for good, so
// a generous bound costs nothing when all is well and keeps a reaper
// starved of CPU on a loaded machine from reading as a leak.
func waitNoZombies(t *testing.T) {
	t.Helper()
	var z []int
	if testutil.Until(10*time.Second, 20*time.Millisecond, func() bool { z = zombieChildren(t); return len(z) == 0 }) {
		return
	}
	for _, pid := range z {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		t.Errorf("zombie child pid %d (%s)", pid, bytes.TrimSpace(cmd))
	}
}

func procGone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return os.IsNotExist(err)
}

func wantEvent(t *testing.T, ch <-chan Event, name string) Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var seen []string
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("events closed before %s; saw %s", name, strings.Join(seen, ","))
			}
			if e.Name == name {
				return e
			}
			seen = append(seen, e.Name)
		case <-timeout:
			t.Fatalf("no %s event within 10s; saw %s", name, strings.Join(seen, ","))
		}
	}
}
