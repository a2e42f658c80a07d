package vmactor

import (
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

// waitMetrics polls the manager's samples until ok accepts vm's, or fails
// the test after a deadline.
func waitMetrics(t *testing.T, m *Manager, id string, what string, ok func(messages.VMMetrics) bool) messages.VMMetrics {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last *messages.VMMetrics
	for time.Now().Before(deadline) {
		for _, s := range m.Metrics() {
			if s.ID == id {
				last = &s
				if ok(s) {
					return s
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no sample of vm %s with %s within a minute; last: %+v", id, what, last)
	return messages.VMMetrics{}
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
	t.Logf("first sample: cpu %.2fs, rss %d B, disk0 %+v; later: cpu %.2fs (%.1f%% over %.2fs)",
		first.CPUSeconds, first.RSSBytes, *drive(first, "disk0"), later.CPUSeconds, later.CPUPercent, later.WindowSeconds)

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
