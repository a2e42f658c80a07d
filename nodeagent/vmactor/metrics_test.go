package vmactor

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// waitMetrics polls the manager's samples until ok accepts vm's, or fails
// the test after a minute.
func waitMetrics(t *testing.T, m *Manager, id string, what string, ok func(messages.VMMetrics) bool) messages.VMMetrics {
	t.Helper()
	var got messages.VMMetrics
	testutil.EventuallyReport(t, time.Minute, 50*time.Millisecond, "a sample of vm "+id+" with "+what, func() (bool, string) {
		for _, s := range m.Metrics() {
			if s.ID == id {
				got = s
				return ok(s), fmt.Sprintf("%+v", s)
			}
		}
		return false, "no sample"
	})
	return got
}

// TestMetricsOfRealQEMU samples a real QEMU (TCG; the firmware finds no OS
// on the blank disk, which is enough: it reads the disk and runs code)
// through the VM actor: the vCPU threads' time grows between samples, the
// process's RSS and the drives' counters appear, rates come with the second
// sample, and the sample goes when the VM stops.
func TestMetricsOfRealQEMU(t *testing.T) {
	f := newFixture(t)
	closeManager(t, f.m)
	f.cfg.MetricsInterval = 200 * time.Millisecond
	f.start()
	vm := f.newVM("metered")
	// The start of each sample, to log what one costs (SampledAt is
	// stamped at its end).
	var mu sync.Mutex
	starts := []time.Time{}
	hook := func(string) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
	}
	f.m.beforeSample.Store(&hook)
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))

	first := waitMetrics(t, f.m, vm.ID, "cpu time and disk reads", func(s messages.VMMetrics) bool {
		d := drive(s, "disk0")
		return s.CPUSeconds > 0 && d != nil && d.ReadBytes > 0 && d.ReadOps > 0
	})
	if first.VCPUs != vm.Spec.CPUs || first.RSSBytes < 1<<20 || first.Name != "metered" {
		t.Fatalf("sample: vcpus %d (want %d), rss %d, name %q", first.VCPUs, vm.Spec.CPUs, first.RSSBytes, first.Name)
	}
	if drive(first, "seed0") == nil {
		t.Fatalf("the seed drive is not sampled: %+v", first.Drives)
	}
	if first.BalloonBytes != nil {
		t.Fatalf("a VM without a balloon device reports balloon memory %d", *first.BalloonBytes)
	}
	later := waitMetrics(t, f.m, vm.ID, "more cpu time than the first sample", func(s messages.VMMetrics) bool {
		return s.CPUSeconds > first.CPUSeconds && s.WindowSeconds > 0
	})
	mu.Lock()
	for i := len(starts) - 1; i >= 0; i-- {
		if !starts[i].After(later.SampledAt) {
			t.Logf("one sample (3 QMP queries, /proc, /sys) took %v", later.SampledAt.Sub(starts[i]).Round(10*time.Microsecond))
			break
		}
	}
	mu.Unlock()
	t.Logf("first sample: cpu %.2fs, rss %d B, disk0 %+v; later: cpu %.2fs (%.1f%% over %.2fs)",
		first.CPUSeconds, first.RSSBytes, *drive(first, "disk0"), later.CPUSeconds, later.CPUPercent, later.WindowSeconds)

	// Paused, the vCPU threads stop running and their time freezes: the
	// samples must then hold exactly what /proc says of the threads QEMU
	// names "CPU n/TCG" (not the main loop's, nor the whole process's).
	if _, err := f.m.Pause(t.Context(), vm.ID); err != nil {
		t.Fatal(err)
	}
	obs, err := f.m.VM(vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	var prev float64 = -1
	frozen := waitMetrics(t, f.m, vm.ID, "the same cpu time twice while paused", func(s messages.VMMetrics) bool {
		same := s.CPUSeconds == prev
		prev = s.CPUSeconds
		return same
	})
	if want := vcpuThreadsSeconds(t, obs.Pid); math.Abs(frozen.CPUSeconds-want) > 0.005 {
		t.Fatalf("paused vm's cpu time is %.2fs; its vCPU threads ran %.2fs", frozen.CPUSeconds, want)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	for _, s := range f.m.Metrics() {
		if s.ID == vm.ID {
			t.Fatalf("a stopped VM still has a sample: %+v", s)
		}
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

func drive(s messages.VMMetrics, name string) *messages.DriveMetrics {
	for i := range s.Drives {
		if s.Drives[i].Device == name {
			return &s.Drives[i]
		}
	}
	return nil
}

// vcpuThreadsSeconds sums the CPU time of pid's threads that QEMU names
// after a vCPU ("CPU 0/TCG", "CPU 1/KVM").
func vcpuThreadsSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	threads, err := fs.AllThreads(pid)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	n := 0
	for _, th := range threads {
		comm, err := th.Comm()
		if err != nil || !strings.HasPrefix(comm, "CPU ") {
			continue
		}
		st, err := th.Stat()
		if err != nil {
			t.Fatal(err)
		}
		sum += st.CPUTime()
		n++
	}
	if n == 0 {
		t.Fatalf("qemu %d has no vCPU thread", pid)
	}
	return sum
}

// TestSamplePanicLeavesVMAlone: a sample that panics fails only itself. It
// once came back as an operation's result, which dropped the VM's state:
// the VM vanished from the node's report while QEMU ran on.
func TestSamplePanicLeavesVMAlone(t *testing.T) {
	f := newFixture(t)
	closeManager(t, f.m)
	f.cfg.MetricsInterval = 100 * time.Millisecond
	f.start()
	vm := f.newVM("panicky")
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))
	panicked := make(chan struct{})
	var once sync.Once
	hook := func(id string) {
		if id == vm.ID {
			once.Do(func() { close(panicked) })
			panic("sample boom")
		}
	}
	f.m.beforeSample.Store(&hook)
	select {
	case <-panicked:
	case <-time.After(time.Minute):
		t.Fatal("no sample was taken")
	}
	f.m.beforeSample.Store(nil)
	// Sampling goes on once the panics stop, and the VM is still there.
	before := time.Now()
	waitMetrics(t, f.m, vm.ID, "a sample after the panics", func(s messages.VMMetrics) bool { return s.SampledAt.After(before) })
	o, err := f.m.VM(vm.ID)
	if err != nil || o.Phase != messages.PhaseRunning {
		t.Fatalf("after a panicking sample: %+v, %v", o, err)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

// TestMetricsOfVMWithNIC: a VM's tap, recorded when the start made it, is
// sampled from the guest's side: frames the host sends into the tap (here
// three, written on a packet socket) are what the guest received. The tap
// is found again after an agent restart.
func TestMetricsOfVMWithNIC(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates tap devices")
	}
	f := newFixture(t)
	netw := newTapNetwork(t)
	closeManager(t, f.m)
	f.cfg.Network, f.cfg.MetricsInterval = netw, 100*time.Millisecond
	f.start()
	vm := nicVM(f, "net-metered")
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))
	netw.mu.Lock()
	tap := netw.taps[vm.ID][0]
	netw.mu.Unlock()
	link, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	first := waitMetrics(t, f.m, vm.ID, "a sample of tap "+tap, func(s messages.VMMetrics) bool {
		return len(s.NICs) == 1 && s.NICs[0].Device == tap
	})

	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	frame := make([]byte, 100)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5}) // broadcast, local experimental ethertype
	for range 3 {
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: link.Attrs().Index}); err != nil {
			t.Fatal(err)
		}
	}
	got := waitMetrics(t, f.m, vm.ID, "the three frames received", func(s messages.VMMetrics) bool {
		return len(s.NICs) == 1 && s.NICs[0].RXPackets-first.NICs[0].RXPackets >= 3 &&
			s.NICs[0].RXBytes-first.NICs[0].RXBytes >= 300
	})
	t.Logf("nic %s: %+v", tap, got.NICs[0])
	// An agent restarted re-adopts the VM and finds its tap in the record.
	closeManager(t, f.m)
	f.start()
	waitMetrics(t, f.m, vm.ID, "the tap after an agent restart", func(s messages.VMMetrics) bool {
		return len(s.NICs) == 1 && s.NICs[0].Device == tap && s.NICs[0].RXPackets >= got.NICs[0].RXPackets
	})
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}
