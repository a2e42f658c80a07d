package identity

import (
	"fmt"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

func foldEntry(source, actor string, at time.Time) messages.AuditEntry {
	return messages.AuditEntry{ID: messages.NewID(), Time: at, Actor: actor, Action: "auth.login", Result: "failed", Source: source}
}

// TestFailureFolderWindows: per (address, action, result) and window, the
// first entry is written at once and the rest come out as one count entry.
func TestFailureFolderWindows(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := newFailureFolder(time.Minute, 100)
	var written []messages.AuditEntry
	for i := range 1000 {
		written = append(written, f.add(foldEntry("192.0.2.1", fmt.Sprintf("u%d@x.io", i), t0.Add(time.Duration(i)*time.Millisecond)))...)
	}
	if len(written) != 1 || written[0].Actor != "u0@x.io" || written[0].Count != 0 {
		t.Fatalf("written during the window: %+v", written)
	}
	if got := f.close(t0.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("closed a window before its end: %+v", got)
	}
	got := f.close(t0.Add(time.Minute))
	if len(got) != 1 || got[0].Count != 999 || got[0].Actor != anonymousActor || got[0].Source != "192.0.2.1" {
		t.Fatalf("count entry = %+v", got)
	}
	// Agreeing actors are kept; a new window opens with the next failure.
	t1 := t0.Add(2 * time.Minute)
	if w := f.add(foldEntry("192.0.2.1", "same@x.io", t1)); len(w) != 1 {
		t.Fatalf("first of a new window: %+v", w)
	}
	f.add(foldEntry("192.0.2.1", "same@x.io", t1))
	// An ended window reused before close ran hands its count out first.
	w := f.add(foldEntry("192.0.2.1", "same@x.io", t1.Add(time.Minute)))
	if len(w) != 2 || w[0].Count != 1 || w[0].Actor != "same@x.io" || w[1].Count != 0 {
		t.Fatalf("reusing an ended window: %+v", w)
	}
}

// TestFailureFolderBounded: more addresses than the bound share the
// overflow key; memory and writes stay bounded, and no attempt is lost.
func TestFailureFolderBounded(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := newFailureFolder(time.Minute, 10)
	total := 0
	count := func(es []messages.AuditEntry) {
		for _, e := range es {
			total += max(e.Count, 1)
		}
	}
	writes := 0
	for i := range 5000 {
		es := f.add(foldEntry(fmt.Sprintf("2001:db8:%x::1", i), "x", t0))
		writes += len(es)
		count(es)
	}
	if n := f.tracked(); n > 11 {
		t.Fatalf("%d windows open, want at most 11", n)
	}
	es := f.close(time.Time{})
	writes += len(es)
	count(es)
	if total != 5000 {
		t.Fatalf("entries account for %d of 5000 failures", total)
	}
	// One first each for the 10 tracked addresses, and a first and a count
	// for the overflow key.
	if writes > 12 {
		t.Fatalf("%d writes for 5000 failures over 10 tracked addresses", writes)
	}
}
