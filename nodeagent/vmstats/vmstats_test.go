package vmstats

import (
	"errors"
	"math"
	"os"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

func fixture(t *testing.T) *Reader {
	t.Helper()
	r, err := NewReader("testdata/proc", "testdata/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestThreadsCPUSeconds: the vCPU threads' utime+stime (fields 14 and 15,
// in USER_HZ ticks of 1/100 s) summed, read past a comm that holds spaces,
// a slash and the parenthesis-free name QEMU gives its vCPU threads.
func TestThreadsCPUSeconds(t *testing.T) {
	r := fixture(t)
	got, err := r.ThreadsCPUSeconds(4242, []int{4250, 4251})
	if err != nil {
		t.Fatal(err)
	}
	// (1234+66 + 500+250) ticks = 20.5 s.
	if math.Abs(got-20.5) > 1e-9 {
		t.Fatalf("cpu = %v, want 20.5", got)
	}
	if one, err := r.ThreadsCPUSeconds(4242, []int{4251}); err != nil || math.Abs(one-7.5) > 1e-9 {
		t.Fatalf("one thread = %v, %v; want 7.5", one, err)
	}
	// A thread that is gone fails the sample rather than under-counting.
	if _, err := r.ThreadsCPUSeconds(4242, []int{4250, 4299}); err == nil {
		t.Fatal("a missing thread was not an error")
	}
}

func TestRSSBytes(t *testing.T) {
	r := fixture(t)
	got, err := r.RSSBytes(4242)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(235520 * 1024); got != want {
		t.Fatalf("rss = %d, want %d (VmRSS, not VmHWM or VmSize)", got, want)
	}
	if _, err := r.RSSBytes(4243); err == nil {
		t.Fatal("a missing process was not an error")
	}
}

func TestTap(t *testing.T) {
	r := fixture(t)
	c, err := r.Tap("oxt0a1b2c3d")
	if err != nil {
		t.Fatal(err)
	}
	if c != (TapCounters{RXBytes: 123456, TXBytes: 654321, RXPackets: 1001, TXPackets: 2002}) {
		t.Fatalf("counters = %+v", c)
	}
	// From the guest's side: what the host's tap received, the guest sent.
	n := GuestNIC("oxt0a1b2c3d", c)
	if n.RXBytes != 654321 || n.TXBytes != 123456 || n.RXPackets != 2002 || n.TXPackets != 1001 {
		t.Fatalf("guest view = %+v", n)
	}
	if _, err := r.Tap("oxtmissing"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("missing tap: %v, want ErrNoDevice", err)
	}
	if _, err := r.Tap("oxtbroken"); err == nil || errors.Is(err, ErrNoDevice) {
		t.Fatalf("a counter that is not a number: %v", err)
	}
	for _, bad := range []string{"", "..", "../../../etc", "a/b"} {
		if _, err := r.Tap(bad); err == nil {
			t.Errorf("device name %q was read", bad)
		}
	}
}

// TestOnThisHost reads this process's own threads and a real device, so a
// change of the kernel's formats is caught here and not by a silent zero.
func TestOnThisHost(t *testing.T) {
	r, err := Host()
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	// Burn a little CPU on this thread's process so the sum is nonzero.
	deadline := time.Now().Add(30 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	if cpu, err := r.ThreadsCPUSeconds(pid, []int{pid}); err != nil || cpu < 0 {
		t.Fatalf("cpu of main thread = %v, %v", cpu, err)
	}
	if rss, err := r.RSSBytes(pid); err != nil || rss <= 0 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	if _, err := r.Tap("lo"); err != nil {
		t.Fatalf("lo: %v", err)
	}
}

func TestWithRates(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	prev := messages.VMMetrics{SampledAt: t0, CPUSeconds: 10,
		Drives: []messages.DriveMetrics{{Device: "disk0", ReadBytes: 1000, WriteBytes: 5000, ReadOps: 10, WriteOps: 50}},
		NICs:   []messages.NICMetrics{{Device: "oxt1", RXBytes: 100, TXBytes: 200}}}
	cur := messages.VMMetrics{SampledAt: t0.Add(10 * time.Second), CPUSeconds: 15,
		Drives: []messages.DriveMetrics{{Device: "disk0", ReadBytes: 11000, WriteBytes: 4000, ReadOps: 20, WriteOps: 60},
			{Device: "seed0", ReadBytes: 77}},
		NICs: []messages.NICMetrics{{Device: "oxt1", RXBytes: 1100, TXBytes: 2200}}}
	got := WithRates(&prev, cur)
	if got.WindowSeconds != 10 || got.CPUPercent != 50 {
		t.Fatalf("window %v cpu %v%%, want 10 s and 50%%", got.WindowSeconds, got.CPUPercent)
	}
	d := got.Drives[0]
	if d.ReadBytesPerSec != 1000 || d.WriteBytesPerSec != 0 || d.ReadOpsPerSec != 1 || d.WriteOpsPerSec != 1 {
		t.Fatalf("disk0 rates = %+v (a counter that went down must give 0)", d)
	}
	if s := got.Drives[1]; s.ReadBytesPerSec != 0 {
		t.Fatalf("a drive new since the last sample has a rate: %+v", s)
	}
	if n := got.NICs[0]; n.RXBytesPerSec != 100 || n.TXBytesPerSec != 200 {
		t.Fatalf("nic rates = %+v", n)
	}
	if first := WithRates(nil, cur); first.WindowSeconds != 0 || first.CPUPercent != 0 {
		t.Fatalf("a first sample has rates: %+v", first)
	}
	if same := WithRates(&cur, cur); same.WindowSeconds != 0 {
		t.Fatalf("two samples at one instant gave a window: %+v", same)
	}
}
