package store

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Events is the resource name of lifecycle events: /otherix/events/<ulid>.
// An event is put in the transaction of the change it records (AddEvents),
// so it exists exactly when the change does and its mod revision is the
// change's. Keys are ULIDs: retention deletes a key range from the start.
const Events = "events"

// AddEvents adds the put of each event (nil ones skipped) to t. Events are
// written once and never compared: a ULID names a new key.
func AddEvents(t *Txn, evs ...*messages.Event) *Txn {
	for _, e := range evs {
		if e != nil {
			t.put(RowKey(Events, e.ID), e)
		}
	}
	return t
}

// MaxEventScan bounds how many events one list request reads: a filter
// that matches few events (one developer's, in a busy cluster) answers a
// short page with a cursor rather than reading the whole retention.
const MaxEventScan = 2000

// EventFilter selects events in ListEvents.
type EventFilter struct {
	// Since skips events minted before it (zero: from the oldest kept).
	Since time.Time
	// Type is an object kind ("vm") or an event type ("vm.started").
	Type string
	// Object is an object's name or id.
	Object string
	// Visible, when set, hides events the caller may not see.
	Visible func(*messages.Event) bool
}

func (f EventFilter) match(e *messages.Event) bool {
	if !e.MatchesType(f.Type) {
		return false
	}
	if f.Object != "" && e.Object.Name != f.Object && e.Object.ID != f.Object {
		return false
	}
	return f.Visible == nil || f.Visible(e)
}

// ListEvents returns one page of events matching f, oldest first. It reads
// at most MaxEventScan events: when it stops there, the page may be short
// (even empty) and the cursor says where to go on. Undecodable rows are
// skipped, so one bad row never hides the rest.
func (s *Store) ListEvents(ctx context.Context, f EventFilter, p Page) ([]*messages.Event, string, error) {
	prefix := RowPrefix(Events)
	from := prefix
	if !f.Since.IsZero() {
		from = prefix + ulidPrefix(f.Since)
	}
	if p.Cursor != "" {
		last, err := DecodeCursor(p.Cursor)
		if err != nil {
			return nil, "", err
		}
		if after := prefix + last + "\x00"; after > from {
			from = after
		}
	}
	limit := p.limit()
	rr := readRevisionOf(ctx)
	var out []*messages.Event
	scanned := 0
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(prefixEnd(prefix)), clientv3.WithLimit(MaxPageSize),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rr != nil && rr.rev != 0 {
			opts = append(opts, clientv3.WithRev(rr.rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, "", unavailable(err)
		}
		if rr != nil && rr.rev == 0 {
			// Every later chunk reads at this revision: the page is one
			// snapshot, and a watch from it misses nothing.
			rr.rev = resp.Header.Revision
		}
		for i, k := range resp.Kvs {
			scanned++
			id := lastSegment(string(k.Key))
			e, err := decode[messages.Event](k.Value, k.ModRevision)
			if err == nil && f.match(e) {
				out = append(out, e)
			}
			more := i < len(resp.Kvs)-1 || resp.More
			if len(out) == limit || scanned >= MaxEventScan {
				if !more {
					return out, "", nil
				}
				return out, EncodeCursor(id), nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, "", nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// PruneEvents deletes events minted before cutoff, then the oldest beyond
// maxCount (0: no count bound), and returns how many it removed. It reads
// keys only, and deletes in transactions under the op limit.
func (s *Store) PruneEvents(ctx context.Context, maxCount int, cutoff time.Time) (int, error) {
	prefix := RowPrefix(Events)
	removed := 0
	if !cutoff.IsZero() {
		n, err := s.deleteOldest(ctx, prefix, prefix+ulidPrefix(cutoff), -1)
		removed += n
		if err != nil {
			return removed, err
		}
	}
	if maxCount <= 0 {
		return removed, nil
	}
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return removed, unavailable(err)
	}
	if over := int(resp.Count) - maxCount; over > 0 {
		n, err := s.deleteOldest(ctx, prefix, prefixEnd(prefix), over)
		removed += n
		if err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// deleteOldest deletes keys from the start of [from, end), at most n of
// them (n < 0: all), in transactions of at most the op limit.
func (s *Store) deleteOldest(ctx context.Context, from, end string, n int) (int, error) {
	removed := 0
	for n < 0 || removed < n {
		batch := s.maxOps
		if n >= 0 {
			batch = min(batch, n-removed)
		}
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(int64(batch)), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return removed, unavailable(err)
		}
		if len(resp.Kvs) == 0 {
			return removed, nil
		}
		ops := make([]clientv3.Op, 0, len(resp.Kvs))
		for _, k := range resp.Kvs {
			ops = append(ops, clientv3.OpDelete(string(k.Key)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return removed, unavailable(err)
		}
		removed += len(ops)
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		if !resp.More {
			return removed, nil
		}
	}
	return removed, nil
}

// GetEvent loads one event.
func (s *Store) GetEvent(ctx context.Context, id string) (*messages.Event, error) {
	return Get[messages.Event](ctx, s, Events, id)
}
