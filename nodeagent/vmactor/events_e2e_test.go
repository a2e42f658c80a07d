//go:build e2e

package vmactor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/test/guest"
)

// These tests make the real test guest (TCG) do what guests do on their
// own — power off, panic, fill a disk — and check that the QMP events
// reach the VM's actor: phase, reason and message change, and the agent
// asks for a heartbeat at once (Config.Changed).

// eventFixture is a manager over the test guest whose Changed hook counts.
type eventFixture struct {
	*fixture
	changed atomic.Int64
}

// newEventFixture starts a manager serving the test guest; edit may change
// the config (the disk dir) before the manager starts.
func newEventFixture(t *testing.T, edit func(*Config)) *eventFixture {
	t.Helper()
	needQEMU(t)
	body, err := os.ReadFile(guest.Image(t))
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "vmv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	f := newFixtureServing(t, base, body)
	// Again, with the hook (the fixture starts its manager at once).
	closeManager(t, f.m)
	ef := &eventFixture{fixture: f}
	f.cfg.Changed = func() { ef.changed.Add(1) }
	if edit != nil {
		edit(&f.cfg)
	}
	f.start()
	return ef
}

// shell is an interactive console on a booted test guest.
type shell struct {
	t  *testing.T
	s  *console.Session
	mu sync.Mutex
	// out is everything read so far.
	out []byte
}

// bootShell creates and starts vm, waits for the guest's boot marker and
// for its shell on ttyS0 to answer.
func (f *eventFixture) bootShell(t *testing.T, vm messages.AgentVM) *shell {
	t.Helper()
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))
	s, err := f.m.Console(vm.ID, messages.ConsoleInteractive, false)
	if err != nil {
		t.Fatal(err)
	}
	sh := &shell{t: t, s: s}
	go func() {
		for {
			b, err := s.Next(context.Background())
			if err != nil {
				return
			}
			sh.mu.Lock()
			sh.out = append(sh.out, b...)
			sh.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.Close(1000, "test over") })
	sh.waitOutput(regexp.MustCompile(guest.ReadyMarker+` instance-id=`+vm.ID), 3*time.Minute)
	// The shell may still be starting: type until it evaluates $((6*7)).
	want := regexp.MustCompile(`(?m)^up-42\r?$`)
	testutil.EventuallyReport(t, 90*time.Second, 3*time.Second, "the guest's shell answers", func() (bool, string) {
		if !sh.matches(want) {
			_ = s.Write([]byte("echo up-$((6*7))\n"))
		}
		return sh.matches(want), sh.text()
	})
	return sh
}

func (sh *shell) matches(re *regexp.Regexp) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return re.Match(sh.out)
}

func (sh *shell) text() string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return string(sh.out)
}

func (sh *shell) waitOutput(re *regexp.Regexp, within time.Duration) {
	sh.t.Helper()
	testutil.EventuallyReport(sh.t, within, 100*time.Millisecond, "guest output "+re.String(), func() (bool, string) {
		return sh.matches(re), sh.text()
	})
}

func (sh *shell) type_(line string) {
	sh.t.Helper()
	if err := sh.s.Write([]byte(line + "\n")); err != nil {
		sh.t.Fatalf("type %q: %v", line, err)
	}
}

// waitObserved polls the VM's observed state until cond holds.
func (f *eventFixture) waitObserved(t *testing.T, id string, within time.Duration, what string, cond func(messages.VMObserved) bool) messages.VMObserved {
	t.Helper()
	var last messages.VMObserved
	testutil.EventuallyReport(t, within, 20*time.Millisecond, what, func() (bool, string) {
		o, err := f.m.VM(id)
		if err != nil {
			return false, err.Error()
		}
		last = *o
		return cond(last), fmt.Sprintf("%+v", last)
	})
	return last
}

// TestGuestPoweroffStopsVM: a guest that reboots itself (reboot -f) keeps
// running with the reset noted (GuestReset); one that powers itself off
// (poweroff -f on its console) leaves the VM stopped with reason
// GuestShutdown, reported through Changed; a start brings it back and
// clears the reason.
func TestGuestPoweroffStopsVM(t *testing.T) {
	f := newEventFixture(t, nil)
	vm := f.newVM("poweroff")
	vm.Spec.MemoryMiB, vm.Spec.UserData = 256, ""
	sh := f.bootShell(t, vm)

	// A guest that reboots itself keeps running; the reset is noted.
	sh.type_("reboot -f")
	o := f.waitObserved(t, vm.ID, 60*time.Second, "the guest's reset noted", func(o messages.VMObserved) bool {
		return o.Reason == messages.ReasonGuestReset
	})
	if o.Phase != messages.PhaseRunning || !strings.Contains(o.Message, "rebooted itself") {
		t.Fatalf("after reboot -f: %+v; want running, a message saying the guest rebooted", o)
	}
	marker := regexp.MustCompile(guest.ReadyMarker + ` instance-id=` + vm.ID)
	testutil.EventuallyReport(t, 3*time.Minute, 100*time.Millisecond, "the guest booted again", func() (bool, string) {
		return len(marker.FindAllIndex([]byte(sh.text()), -1)) >= 2, sh.text()
	})
	again := regexp.MustCompile(`(?m)^again-43\r?$`)
	testutil.EventuallyReport(t, 90*time.Second, 3*time.Second, "the shell answers after the reboot", func() (bool, string) {
		if !sh.matches(again) {
			_ = sh.s.Write([]byte("echo again-$((6*7+1))\n"))
		}
		return sh.matches(again), sh.text()
	})

	before := f.changed.Load()
	typed := time.Now()
	sh.type_("poweroff -f")
	o = f.waitObserved(t, vm.ID, 60*time.Second, "vm stopped by its guest", func(o messages.VMObserved) bool {
		return o.Phase == messages.PhaseStopped
	})
	took := time.Since(typed)
	if o.Reason != messages.ReasonGuestShutdown || !strings.Contains(o.Message, "powered itself off") {
		t.Fatalf("observed %+v; want reason %s and a message saying the guest powered off", o, messages.ReasonGuestShutdown)
	}
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "a heartbeat asked for", func() bool {
		return f.changed.Load() > before
	})
	t.Logf("poweroff -f typed → stopped observed in %v", took)

	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMStart, vm)))
	if o, _ := f.m.VM(vm.ID); o.Phase != messages.PhaseRunning || o.Reason != "" || o.Message != "" {
		t.Fatalf("after start: %+v; want running without a reason", o)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	if o, _ := f.m.VM(vm.ID); o.Phase != messages.PhaseStopped || o.Reason != "" {
		t.Fatalf("after the user's poweroff: %+v; want stopped without a reason", o)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

// TestGuestPanicCrashesVM: a kernel panic (sysrq c) reaches QEMU through
// the pvpanic device; QEMU ends the guest and the VM is crashed with
// reason GuestPanicked.
func TestGuestPanicCrashesVM(t *testing.T) {
	f := newEventFixture(t, nil)
	vm := f.newVM("panic")
	vm.Spec.MemoryMiB, vm.Spec.UserData = 256, ""
	sh := f.bootShell(t, vm)
	// The guest must have bound the pvpanic driver, or the panic would
	// only hang it.
	sh.type_("ls /sys/bus/platform/drivers/pvpanic-mmio/ | grep -c QEMU0001 | sed s/^/pvpanic-bound-/")
	sh.waitOutput(regexp.MustCompile(`(?m)^pvpanic-bound-1\r?$`), 30*time.Second)

	before := f.changed.Load()
	sh.type_("echo c > /proc/sysrq-trigger")
	o := f.waitObserved(t, vm.ID, 60*time.Second, "vm crashed", func(o messages.VMObserved) bool {
		return o.Phase != messages.PhaseRunning
	})
	if o.Phase != messages.PhaseCrashed || o.Reason != messages.ReasonGuestPanicked || !strings.Contains(o.Message, "panicked") {
		t.Fatalf("observed %+v; want phase %s, reason %s", o, messages.PhaseCrashed, messages.ReasonGuestPanicked)
	}
	if f.changed.Load() == before {
		t.Fatal("no heartbeat asked for after the crash")
	}
	log, err := f.m.Log(vm.ID, 1<<20)
	if err != nil || !regexp.MustCompile(`Kernel panic|sysrq triggered crash`).Match(log) {
		t.Fatalf("the serial log lacks the panic: %v\n%s", err, log)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

// TestFullDiskPausesVMUntilResumed: the VM's disk lives on a small
// filesystem; the guest writes until the qcow2 cannot grow, QEMU pauses it
// (werror=enospc) and the VM is paused with reason IOError naming the
// disk. Once space is freed, resume lets the guest finish its write.
func TestFullDiskPausesVMUntilResumed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount a small filesystem")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	small, err := os.MkdirTemp("", "vmfull")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(small) })
	fsImg, mnt := filepath.Join(small, "fs.img"), filepath.Join(small, "mnt")
	sh := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	sh("truncate", "-s", "128M", fsImg)
	sh("mkfs.ext4", "-q", "-F", "-m", "0", fsImg)
	sh("mount", "-o", "loop", fsImg, mnt)
	// Registered after the fixture's own cleanups run (LIFO): QEMU is gone
	// by the time the filesystem is unmounted.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	// Ballast leaves ~16 MiB free; deleting it is how space is freed.
	ballast := filepath.Join(mnt, "ballast")
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	sh("fallocate", "-l", fmt.Sprint(free-(16<<20)), ballast)

	f := newEventFixture(t, func(c *Config) { c.DiskDir = filepath.Join(mnt, "vms") })
	vm := f.newVM("fulldisk")
	vm.Spec.MemoryMiB, vm.Spec.UserData = 256, ""
	gsh := f.bootShell(t, vm)

	// 64 MiB of data past the guest's boot partition: more than the
	// filesystem holds, so the qcow2 cannot grow enough.
	gsh.type_("dd if=/dev/zero of=/dev/vda bs=1M seek=64 count=64 conv=fsync 2>/dev/null; echo write-done-$((1+1))")
	o := f.waitObserved(t, vm.ID, 2*time.Minute, "vm paused on the full disk", func(o messages.VMObserved) bool {
		return o.Phase == messages.PhasePaused
	})
	if o.Reason != messages.ReasonIOError || !strings.Contains(o.Message, "I/O error on disk vda") ||
		!strings.Contains(o.Message, "No space left on device") {
		t.Fatalf("observed %+v; want reason %s naming vda and ENOSPC", o, messages.ReasonIOError)
	}
	if gsh.matches(regexp.MustCompile(`write-done-2`)) {
		t.Fatal("the guest finished its write although the disk was full")
	}

	// An agent restart finds the VM paused for the same reason, and the
	// new actor drains the re-adopted QEMU's events.
	gsh.s.Close(1000, "agent restart")
	closeManager(t, f.m)
	f.start()
	again := f.waitObserved(t, vm.ID, 30*time.Second, "re-adopted vm", func(o messages.VMObserved) bool { return o.Pid > 0 })
	if again.Phase != messages.PhasePaused || again.Reason != messages.ReasonIOError || again.Message != o.Message {
		t.Fatalf("after an agent restart: %+v; want %+v", again, o)
	}
	s, err := f.m.Console(vm.ID, messages.ConsoleReadOnly, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(1000, "test over")
	gsh = &shell{t: t, s: s}
	go func() {
		for {
			b, err := s.Next(context.Background())
			if err != nil {
				return
			}
			gsh.mu.Lock()
			gsh.out = append(gsh.out, b...)
			gsh.mu.Unlock()
		}
	}()

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.m.Resume(ctx, vm.ID); err != nil {
		t.Fatalf("resume: %v", err)
	}
	gsh.waitOutput(regexp.MustCompile(`(?m)^write-done-2\r?$`), 2*time.Minute)
	o = f.waitObserved(t, vm.ID, 30*time.Second, "vm running again", func(o messages.VMObserved) bool {
		return o.Phase == messages.PhaseRunning
	})
	if o.Reason != "" {
		t.Fatalf("after resume: %+v; want no reason", o)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}
