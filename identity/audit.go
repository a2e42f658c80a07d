package identity

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// auditWriter batches audit entries: Audit only appends to a bounded buffer,
// and run writes the buffer every flush interval in as few transactions as
// the op limit allows. When the buffer is full (etcd slow or down) the oldest
// entries are dropped, counted, and a warning says how many.
type auditWriter struct {
	st  *store.Store
	log *slog.Logger
	max int

	mu      sync.Mutex
	buf     []messages.AuditEntry
	dropped int
	// failing is set from a failed write to the next that succeeds, so an
	// outage (a replica without quorum) is one warning, not one per flush.
	failing bool
}

func newAuditWriter(st *store.Store, log *slog.Logger, max int) *auditWriter {
	return &auditWriter{st: st, log: log, max: max}
}

func (w *auditWriter) add(e messages.AuditEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) >= w.max {
		n := len(w.buf) - w.max + 1
		w.buf = w.buf[n:]
		w.dropped += n
	}
	w.buf = append(w.buf, e)
}

func (w *auditWriter) flush(ctx context.Context) {
	w.mu.Lock()
	batch, dropped := w.buf, w.dropped
	w.buf, w.dropped = nil, 0
	w.mu.Unlock()
	if dropped > 0 {
		w.log.Warn("audit buffer full: oldest entries dropped", "dropped", dropped)
	}
	if len(batch) == 0 {
		return
	}
	err := w.st.AppendAudit(ctx, batch)
	if err == nil && w.failing {
		w.failing = false
		w.log.Info("audit entries written again", "entries", len(batch))
	}
	if err != nil {
		// Keep the batch for the next flush, ahead of newer entries, within
		// the bound.
		if !w.failing {
			w.log.Warn("write audit entries", "entries", len(batch), "err", err)
		}
		w.failing = true
		w.mu.Lock()
		w.buf = append(batch, w.buf...)
		if over := len(w.buf) - w.max; over > 0 {
			w.buf = w.buf[over:]
			w.dropped += over
		}
		w.mu.Unlock()
	}
}

// Audit records an entry without waiting for it to be written. Time and ID
// are filled in when empty; entries are written within AuditFlush.
func (s *Service) Audit(entry messages.AuditEntry) {
	s.record(entry)
}

// AuditFailure records the entry of a request made without valid
// credentials, such as a refused enrollment, folded per client address like
// a failed login (recordFailure).
func (s *Service) AuditFailure(entry messages.AuditEntry) {
	s.recordFailure(entry)
}

// FailureWindows is the number of open failure-audit windows, at most
// LimiterSize and the overflow window.
func (s *Service) FailureWindows() int { return s.failures.tracked() }

// auditLoop writes the buffer every AuditFlush, closing the failure windows
// that ended first so their counts go out in the same write. When ctx ends
// it closes every window, however young, and flushes once more, so no count
// is lost at shutdown.
func (s *Service) auditLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.AuditFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, e := range s.failures.close(time.Time{}) {
				s.audit.add(e)
			}
			final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.audit.flush(final)
			cancel()
			return
		case <-t.C:
			for _, e := range s.failures.close(s.cfg.Now()) {
				s.audit.add(e)
			}
			s.audit.flush(ctx)
		}
	}
}

// record queues an entry. An entry without an actor, or with actor
// "anonymous", comes from a request without valid credentials and is folded
// (recordFailure).
func (s *Service) record(e messages.AuditEntry) {
	if e.Actor == "" || e.Actor == anonymousActor {
		s.recordFailure(e)
		return
	}
	s.audit.add(s.complete(e))
}

// recordFailure queues the entry of a request made without valid
// credentials: a failed or rate-limited login, a refused enrollment, a
// refused console attach, a replayed refresh token, a request with a bad
// bearer. Its actor, if any, was chosen by the caller (an email, a join token
// id), so it must not decide how much is written: entries are folded per
// client address, action and result (failureFolder), and only the first of a
// window is written as it comes.
func (s *Service) recordFailure(e messages.AuditEntry) {
	e = s.complete(e)
	for _, w := range s.failures.add(e) {
		s.audit.add(w)
	}
}

func (s *Service) complete(e messages.AuditEntry) messages.AuditEntry {
	if e.Time.IsZero() {
		e.Time = s.cfg.Now().UTC()
	}
	if e.ID == "" {
		e.ID = messages.NewID()
	}
	if e.Actor == "" {
		e.Actor = anonymousActor
	}
	return e
}

const anonymousActor = "anonymous"

// ListAudit returns one page of the audit log, oldest first (ids are ULIDs,
// so key order is time order; the last page holds the newest entries).
func (s *Service) ListAudit(ctx context.Context, page store.Page) ([]messages.AuditEntry, string, error) {
	return s.st.ListAudit(ctx, page)
}
