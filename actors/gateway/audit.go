package gateway

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

// run flushes every interval until ctx ends, then once more.
func (w *auditWriter) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			w.flush(final)
			cancel()
			return
		case <-t.C:
			w.flush(ctx)
		}
	}
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
	if err := w.st.AppendAudit(ctx, batch); err != nil {
		// Keep the batch for the next flush, ahead of newer entries, within
		// the bound.
		w.log.Warn("write audit entries", "entries", len(batch), "err", err)
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
func (g *Gateway) Audit(entry messages.AuditEntry) {
	g.id.record(entry)
}

func (id *identity) record(e messages.AuditEntry) {
	if e.Time.IsZero() {
		e.Time = id.cfg.Now().UTC()
	}
	if e.ID == "" {
		e.ID = messages.NewID()
	}
	if e.Actor == "" {
		e.Actor = "anonymous"
	}
	if e.Actor == "anonymous" && !id.anonAudit.allow(e.Source, e.Time) {
		if n := id.anonDropped.Add(1); n%1000 == 1 {
			id.log.Warn("unauthenticated requests over the audit limit; not audited", "source", e.Source, "dropped_total", n)
		}
		return
	}
	id.audit.add(e)
}

// anonAuditPerMinute is how many audit entries one source may cause per
// minute without credentials.
const anonAuditPerMinute = 60

// ListAudit returns one page of the audit log, oldest first (ids are ULIDs,
// so key order is time order; the last page holds the newest entries).
func (g *Gateway) ListAudit(ctx context.Context, page store.Page) ([]messages.AuditEntry, string, error) {
	return g.st.ListAudit(ctx, page)
}
