package vmactor

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// TestIOErrorText: a BLOCK_IO_ERROR names the disk as the guest sees it
// and says what to do about a full node.
func TestIOErrorText(t *testing.T) {
	for _, tt := range []struct {
		data map[string]any
		want []string
	}{
		{map[string]any{"device": "", "node-name": "disk0", "operation": "write", "action": "stop", "nospace": true,
			"reason": "No space left on device"}, []string{"I/O error on disk vda: No space left on device", "free space", "otherix vm resume"}},
		{map[string]any{"node-name": "seed0", "operation": "read", "action": "stop", "reason": "Input/output error"},
			[]string{"I/O error on disk vdb (the cloud-init seed): read Input/output error"}},
		{map[string]any{"device": "other", "operation": "write", "action": "stop"}, []string{"I/O error on disk other: write unknown error"}},
		// A snapshot's overlay is still the boot disk; a hot-plugged
		// disk is named by its id, whatever node of its chain failed.
		{map[string]any{"node-name": "disk0-s2-file", "operation": "write", "action": "stop", "nospace": true,
			"reason": "No space left on device"}, []string{"I/O error on disk vda: No space left on device"}},
		{map[string]any{"node-name": "data1-s3", "operation": "write", "action": "stop", "reason": "Input/output error"},
			[]string{"I/O error on disk data1: write Input/output error"}},
	} {
		got := ioErrorText(tt.data)
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("ioErrorText(%v) = %q; want it to contain %q", tt.data, got, w)
			}
		}
	}
}

// TestChangedWakesAtMostOncePerGap: a burst of VM changes wakes the
// heartbeat once at once and once more at the end of the gap, not once per
// change; a closed manager wakes nothing.
func TestChangedWakesAtMostOncePerGap(t *testing.T) {
	var calls atomic.Int64
	m := &Manager{cfg: Config{Changed: func() { calls.Add(1) }}}
	for range 5 {
		m.changed()
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("after a burst: %d wakes, want 1 at once", n)
	}
	testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, "the trailing wake", func() bool { return calls.Load() == 2 })
	m.changed() // inside the gap again: trailing
	m.stopWakes()
	time.Sleep(2 * minWakeGap) // nothing may come: there is no event to wait for
	if n := calls.Load(); n != 2 {
		t.Fatalf("after close: %d wakes, want 2", n)
	}
}
