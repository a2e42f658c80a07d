package watch

import (
	"context"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/persistence/store"
)

// Sub is one subscriber: read it with Next, end it with Close.
type Sub struct {
	h      *Hub
	filter Filter
	// from is the revision the subscriber has (or will have, after its
	// replay) seen everything up to; the live feed sends only later ones.
	from int64
	// live is the bounded buffer the hub fills; the hub closes it, setting
	// endErr first, when it drops the subscriber.
	live   chan Event
	endErr error

	// replay carries the history from the asked revision up to from; nil
	// once drained or when none was needed.
	replay    chan Event
	replayErr error
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// Subscribe starts a subscriber at since: it is sent every change after
// that revision which filter takes, then bookmarks and changes as they
// come. since 0 means now. A since etcd has compacted is a *CompactedError,
// one it has not reached ErrFutureRevision.
func (h *Hub) Subscribe(ctx context.Context, since int64, filter Filter) (*Sub, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The current revision, read linearizably: a since beyond it names a
	// revision no list has answered.
	resp, err := h.cli.Get(ctx, store.Root, clientv3.WithCountOnly())
	if err != nil {
		// A leader changing (a replica was killed) or lost is a 503 the
		// client retries, on this replica or another, not an internal
		// error that ends it.
		return nil, store.Unavailable(fmt.Errorf("watch: read current revision: %w", err))
	}
	if since > resp.Header.Revision {
		return nil, ErrFutureRevision
	}
	s := &Sub{h: h, filter: filter, live: make(chan Event, h.cfg.Buffer)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	end := h.lastEvent
	if since == 0 {
		since = h.progress
		// A stream started "now" learns its revision at once.
		s.live <- Event{Rev: since, Kind: Bookmark}
	}
	s.from = max(since, end)
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	if since < end {
		if err := s.startReplay(ctx, since, end); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// startReplay replays (since, end] from etcd's history on a watch of its
// own, which ends once it has passed end. It returns after etcd's first
// answer, so that a compacted since is reported before any event.
func (s *Sub) startReplay(ctx context.Context, since, end int64) error {
	rctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.WithoutCancel(ctx)))
	s.cancel = cancel
	wch := s.h.cli.Watch(rctx, store.Root, clientv3.WithPrefix(), clientv3.WithRev(since+1), clientv3.WithPrevKV())
	var first clientv3.WatchResponse
	select {
	case first = <-wch:
	case <-ctx.Done():
		return ctx.Err()
	}
	if first.CompactRevision != 0 {
		return &CompactedError{Since: since, Compacted: first.CompactRevision}
	}
	if err := first.Err(); err != nil {
		if err == rpctypes.ErrCompacted {
			return &CompactedError{Since: since}
		}
		return store.Unavailable(fmt.Errorf("watch: replay from %d: %w", since, err))
	}
	s.replay = make(chan Event)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.replay)
		s.replayErr = s.pump(rctx, wch, first, end)
	}()
	return nil
}

// pump forwards replayed events up to end and stops at the first answer
// that reaches it: etcd never splits one revision across answers.
func (s *Sub) pump(ctx context.Context, wch clientv3.WatchChan, resp clientv3.WatchResponse, end int64) error {
	for {
		if err := resp.Err(); err != nil {
			return ErrResync
		}
		done := false
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision > end {
				done = true
				break
			}
			done = done || ev.Kv.ModRevision == end
			e, ok := convert(ev)
			if !ok || !s.filter(e) {
				continue
			}
			select {
			case s.replay <- e:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if done {
			return nil
		}
		var ok bool
		select {
		case resp, ok = <-wch:
			if !ok {
				return ErrResync
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Next returns the next event in revision order: the replay first, then
// the live feed. It returns ErrResync when the subscriber fell behind and
// ErrClosed when the hub stopped; ctx's error when ctx ends.
func (s *Sub) Next(ctx context.Context) (Event, error) {
	if s.replay != nil {
		select {
		case e, ok := <-s.replay:
			if ok {
				return e, nil
			}
			s.replay = nil
			if s.replayErr != nil {
				return Event{}, s.replayErr
			}
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
	select {
	case e, ok := <-s.live:
		if !ok {
			return Event{}, s.endErr
		}
		return e, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Pending reports whether Next would return a live event at once: a
// stream writer flushes only when it would not, so a stream that fell a
// little behind catches up with one write for many events.
func (s *Sub) Pending() bool {
	return s.replay == nil && len(s.live) > 0
}

// Close ends the subscriber and waits for its replay to stop.
func (s *Sub) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.h.mu.Lock()
	s.h.dropLocked(s, ErrClosed)
	s.h.mu.Unlock()
}
