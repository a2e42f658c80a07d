//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/test/guest"
)

// TestVMTopShowsBusyGuest: the real agent samples a booted test guest that
// writes 16 MiB to its disk and burns its vCPU, its heartbeats carry the
// samples, and `otherix vm top` and `vm describe` show the counters rising
// within the agent's sampling interval (10 s) plus two heartbeats (2 s).
func TestVMTopShowsBusyGuest(t *testing.T) {
	const heartbeat = 2 * time.Second
	c := newClusterBeating(t, heartbeat)
	c.mustCLI("vm", "create", "busy", "--image", c.imageURL, "--sha256", c.imageSHA,
		"--memory", "256Mi", "--disk", "1Gi", "--wait")
	v := c.vm("busy")

	con := c.startConsole("vm", "console", "busy")
	con.waitFor(t, guest.ReadyMarker+" instance-id="+v.ID, 2*time.Minute)
	testutil.EventuallyReport(t, 90*time.Second, 2*time.Second, "the guest's shell answers", func() (bool, string) {
		if !strings.Contains(con.out.String(), "up-42") {
			_, _ = io.WriteString(con.stdin, "echo up-$((6*7))\n")
		}
		return strings.Contains(con.out.String(), "up-42"), tail(con.out.String(), 2000)
	})

	top := func() *messages.VMMetrics {
		var l struct {
			Items []messages.VMMetricsView `json:"items"`
		}
		if err := json.Unmarshal([]byte(c.mustCLI("vm", "top", "-o", "json")), &l); err != nil {
			t.Fatal(err)
		}
		for _, it := range l.Items {
			if it.Name == "busy" {
				return it.Metrics
			}
		}
		return nil
	}
	var before *messages.VMMetrics
	testutil.Eventually(t, time.Minute, 500*time.Millisecond, "a first sample in vm top", func() bool {
		before = top()
		return before != nil
	})
	disk := func(m *messages.VMMetrics) messages.DriveMetrics {
		for _, d := range m.Drives {
			if d.Device == "disk0" {
				return d
			}
		}
		return messages.DriveMetrics{}
	}

	// The write first: how long until vm top shows it is the latency of
	// the whole path (sample, heartbeat, API, CLI).
	if _, err := io.WriteString(con.stdin, "dd if=/dev/zero of=/dev/vda bs=1M seek=64 count=16 conv=fsync 2>/dev/null; echo wrote-$((8+8))\n"); err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "wrote-16", 2*time.Minute)
	wrote := time.Now()
	var after *messages.VMMetrics
	testutil.EventuallyReport(t, time.Minute, 250*time.Millisecond, "vm top shows the write", func() (bool, string) {
		after = top()
		return after != nil && disk(after).WriteBytes-disk(before).WriteBytes >= 16<<20, c.mustCLI("vm", "top", "-o", "wide")
	})
	seen := time.Since(wrote)
	if limit := 10*time.Second + 2*heartbeat + 3*time.Second; seen > limit {
		t.Errorf("the write showed %v after it ended; want within the sampling interval and two heartbeats (%v)", seen, limit)
	}
	// Then the vCPU, burnt for 10 s: a second of it at least (the host's
	// two cores are shared by many tests).
	if _, err := io.WriteString(con.stdin, "end=$(($(date +%s)+10)); while [ $(date +%s) -lt $end ]; do :; done; echo burnt-$((2+3))\n"); err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "burnt-5", 2*time.Minute)
	burnt := after.CPUSeconds
	testutil.EventuallyReport(t, time.Minute, 250*time.Millisecond, "vm top shows the burnt CPU", func() (bool, string) {
		after = top()
		return after != nil && after.CPUSeconds-burnt >= 1, c.mustCLI("vm", "top", "-o", "wide")
	})
	t.Logf("vm top: disk0 written %d → %d B, shown %v after the write ended; cpu %.1fs → %.1fs",
		disk(before).WriteBytes, disk(after).WriteBytes, seen.Round(time.Millisecond), burnt, after.CPUSeconds)
	out := c.mustCLI("vm", "describe", "busy")
	for _, want := range []string{"Metrics:", "Drive disk0:", "resident (QEMU)"} {
		mustContain(t, out, want)
	}
	c.mustCLI("vm", "delete", "busy", "--force", "--wait")
}
