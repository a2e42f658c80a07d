package testutil

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntilReturnsOnceCondHolds(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	if !Until(10*time.Second, time.Millisecond, func() bool { return calls.Add(1) == 3 }) {
		t.Fatal("Until = false, want true")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Until took %v after cond held", d)
	}
}

func TestUntilGivesUpAtDeadline(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	if Until(50*time.Millisecond, 5*time.Millisecond, func() bool { calls.Add(1); return false }) {
		t.Fatal("Until = true for a cond that never holds")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("Until gave up after %v, before its 50ms", d)
	}
	// A 5ms interval allows about 11 calls in 50ms; a busy loop makes
	// thousands. Sleeps only run long on a loaded machine, never short.
	if n := calls.Load(); n < 2 || n > 20 {
		t.Errorf("cond called %d times in 50ms at a 5ms interval", n)
	}
}

// recorder catches Fatalf so the failure path can be checked.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

func TestEventuallyFailsNamingWhat(t *testing.T) {
	r := &recorder{TB: t}
	Eventually(r, 20*time.Millisecond, time.Millisecond, "the door to open", func() bool { return false })
	if !strings.Contains(r.msg, "the door to open") || !strings.Contains(r.msg, "20ms") {
		t.Errorf("message %q does not name the condition and timeout", r.msg)
	}

	r = &recorder{TB: t}
	Eventually(r, time.Second, time.Millisecond, "true", func() bool { return true })
	if r.msg != "" {
		t.Errorf("Eventually failed for a cond that holds: %q", r.msg)
	}
}

func TestEventuallyReportGivesLastSeen(t *testing.T) {
	r := &recorder{TB: t}
	n := 0
	EventuallyReport(r, 20*time.Millisecond, time.Millisecond, "n to reach 1e9", func() (bool, string) {
		n++
		return false, fmt.Sprintf("n=%d", n)
	})
	if want := fmt.Sprintf("last: n=%d", n); !strings.HasSuffix(r.msg, want) {
		t.Errorf("message %q, want it to end with %q", r.msg, want)
	}
}
