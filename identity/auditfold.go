package identity

import (
	"sync"
	"time"

	"github.com/otherix/otherix/internal/ratelimit"
	"github.com/otherix/otherix/messages"
)

// failureFolder folds the audit entries of failures without credentials.
// Per (client address, action, result) and window, the first entry is
// written as it comes and the rest only counted; when the window ends, one
// more entry carries the count of those not written. So one client address
// causes at most two audit writes per action, result and window whatever its
// rate, and the actions and results are a fixed set (the route table's and
// the error codes').
//
// The number of client addresses tracked is bounded too: when max windows
// are open, a new address shares the overflow key ("other") with every other
// newcomer until windows end, so a client holding many addresses (an IPv6
// /48 is 65,536 /64s) adds at most one more set of entries per window, and
// memory stays bounded.
type failureFolder struct {
	window time.Duration
	max    int

	mu sync.Mutex
	m  map[foldKey]*foldWindow
	// swept is when add last swept a full map for ended windows; a flood
	// of new addresses sweeps at most once a second.
	swept time.Time
}

// overflowSource is the source recorded for failures of client addresses
// beyond the tracked ones.
const overflowSource = "other"

type foldKey struct{ source, action, result string }

type foldWindow struct {
	start time.Time
	// folded counts the entries not written; last is the latest of them.
	folded int
	last   time.Time
	// actor and target are the first entry's; same* say whether every
	// folded entry agreed with them.
	actor, target         string
	sameActor, sameTarget bool
}

func newFailureFolder(window time.Duration, max int) *failureFolder {
	return &failureFolder{window: window, max: max, m: make(map[foldKey]*foldWindow)}
}

// add folds e and returns what must be written now: e itself when it opens
// a window, preceded by the count of the window it replaces if that one
// ended unclosed.
func (f *failureFolder) add(e messages.AuditEntry) []messages.AuditEntry {
	k := foldKey{source: ratelimit.SourceKey(e.Source), action: e.Action, result: e.Result}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []messages.AuditEntry
	if _, tracked := f.m[k]; !tracked && len(f.m) >= f.max {
		if e.Time.Sub(f.swept) >= time.Second {
			f.swept = e.Time
			out = f.closeLocked(e.Time, out)
		}
		if len(f.m) >= f.max {
			k.source = overflowSource
		}
	}
	if w, ok := f.m[k]; ok {
		if e.Time.Sub(w.start) < f.window {
			w.folded++
			w.last = e.Time
			w.sameActor = w.sameActor && e.Actor == w.actor
			w.sameTarget = w.sameTarget && e.Target == w.target
			return nil
		}
		if w.folded > 0 {
			out = append(out, w.entry(k))
		}
	}
	f.m[k] = &foldWindow{start: e.Time, actor: e.Actor, target: e.Target, sameActor: true, sameTarget: true}
	// The first entry keeps the exact address; the count entry names the
	// key (an IPv6 /64, or "other").
	return append(out, e)
}

// close ends the windows that are a window old at now (every window for a
// zero now) and returns the count entries of those that folded anything.
func (f *failureFolder) close(now time.Time) []messages.AuditEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closeLocked(now, nil)
}

func (f *failureFolder) closeLocked(now time.Time, out []messages.AuditEntry) []messages.AuditEntry {
	for k, w := range f.m {
		if !now.IsZero() && now.Sub(w.start) < f.window {
			continue
		}
		delete(f.m, k)
		if w.folded > 0 {
			out = append(out, w.entry(k))
		}
	}
	return out
}

// tracked is the number of open windows (for tests).
func (f *failureFolder) tracked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}

// entry is the count entry of a window: the entries it did not write.
func (w *foldWindow) entry(k foldKey) messages.AuditEntry {
	e := messages.AuditEntry{ID: messages.NewID(), Time: w.last, Actor: anonymousActor,
		Action: k.action, Result: k.result, Source: k.source, Count: w.folded}
	if w.sameActor {
		e.Actor = w.actor
	}
	if w.sameTarget {
		e.Target = w.target
	}
	return e
}
