//go:build e2e

package vmactor

import (
	"regexp"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

// TestMetricsOfBusyGuest boots the test guest, makes it burn a vCPU and
// write 16 MiB to its disk, and checks that the samples show it within two
// sampling intervals of the work ending: the vCPU time rises by a second at
// least (of 10 s burnt; this host's two cores are shared by many tests, so
// not by all of it), and disk0's written bytes and write operations by at
// least what the guest wrote.
func TestMetricsOfBusyGuest(t *testing.T) {
	const every = time.Second
	f := newEventFixture(t, func(c *Config) { c.MetricsInterval = every })
	vm := f.newVM("busy")
	vm.Spec.MemoryMiB, vm.Spec.UserData = 256, ""
	sh := f.bootShell(t, vm)

	before := waitMetrics(t, f.m, vm.ID, "a sample with rates", func(s messages.VMMetrics) bool { return s.WindowSeconds > 0 })
	// Write, then burn the vCPU for 10 s; both finish before "burnt".
	sh.type_("dd if=/dev/zero of=/dev/vda bs=1M seek=64 count=16 conv=fsync 2>/dev/null; echo wrote-$((8+8)); " +
		"end=$(($(date +%s)+10)); while [ $(date +%s) -lt $end ]; do :; done; echo burnt-$((2+3))")
	sh.waitOutput(regexp.MustCompile(`wrote-16`), 2*time.Minute)
	sh.waitOutput(regexp.MustCompile(`burnt-5`), 2*time.Minute)
	done := time.Now()

	after := waitMetrics(t, f.m, vm.ID, "the write and the burnt CPU", func(s messages.VMMetrics) bool {
		d, d0 := drive(s, "disk0"), drive(before, "disk0")
		return s.SampledAt.After(done) && d != nil && d0 != nil && d.WriteBytes-d0.WriteBytes >= 16<<20 &&
			s.CPUSeconds-before.CPUSeconds >= 1
	})
	if late := after.SampledAt.Sub(done); late > 2*every+time.Second {
		t.Errorf("the first sample showing the work came %v after it ended; want within two intervals (%v)", late, 2*every)
	}
	d, d0 := drive(after, "disk0"), drive(before, "disk0")
	t.Logf("vCPU time %.1fs → %.1fs; disk0 written %d → %d B (%d → %d ops); rss %d B",
		before.CPUSeconds, after.CPUSeconds, d0.WriteBytes, d.WriteBytes, d0.WriteOps, d.WriteOps, after.RSSBytes)
	if d.WriteOps <= d0.WriteOps {
		t.Errorf("write ops did not rise: %d → %d", d0.WriteOps, d.WriteOps)
	}
	if after.RSSBytes < 64<<20 {
		t.Errorf("a booted guest's QEMU has only %d B resident", after.RSSBytes)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}
