// Package watch fans one etcd watch per replica out to many subscribers:
// the changes to VMs, nodes, tasks and networks, each already rendered as
// the REST API shows it, in revision order, each subscriber behind a
// bounded buffer. A subscriber may start in the past (since a revision): it
// is first replayed etcd's history up to where the shared watch began, then
// joins the live feed, with no gap and no duplicate.
package watch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Event kinds, as the stream's `event:` field names them.
const (
	Added    = "added"
	Modified = "modified"
	Deleted  = "deleted"
	Bookmark = "bookmark"
)

// Resource types a subscriber may ask for: the REST collections' names.
const (
	VMs      = store.VMs
	Tasks    = store.Tasks
	Nodes    = store.Nodes
	Networks = store.Networks
	// Events are lifecycle events (messages.Event): each is added once,
	// and their pruning is not streamed (no deleted events).
	Events = store.Events
)

// Types lists every type a stream may carry.
var Types = []string{VMs, Nodes, Tasks, Networks, Events}

// Defaults for Config fields left zero.
const (
	DefaultBuffer   = 1024
	DefaultBookmark = 15 * time.Second
	// MinBuffer is the smallest buffer a configuration may ask for: a
	// stream starting "now" is handed its first bookmark through it.
	MinBuffer = 16
)

// Config tunes a Hub.
type Config struct {
	// Buffer is how many events a subscriber may fall behind before it is
	// dropped with ErrResync (default DefaultBuffer).
	Buffer int
	// Bookmark is how often every subscriber gets a bookmark carrying the
	// newest revision the hub has seen (default DefaultBookmark).
	Bookmark time.Duration
	// Quorum, when set, ends the shared watch when this replica's member
	// loses its leader: every subscriber gets ErrResync, and the watch
	// starts again once quorum is back. Without it a stream on a replica
	// cut off from the majority would go quiet while the majority moves
	// on (etcd's require-leader option does not reach an in-process
	// watch).
	Quorum store.Quorum
}

// Event is one change, or a bookmark (Kind Bookmark, only Rev set).
type Event struct {
	// Rev is the etcd revision of the change: resuming after it misses
	// nothing and repeats nothing.
	Rev  int64
	Kind string
	// Type is the resource collection (VMs, Nodes, Tasks, Networks).
	Type string
	// ID is the resource's id; Owner its owner for VMs and tasks (and for
	// lifecycle events, their object's owner).
	ID, Owner string
	// Object is the object kind a lifecycle event is about (vm, node,
	// task), by which it is authorized; empty for other types.
	Object string
	// Data is the resource as GET shows it; for a deletion, as it was last.
	Data json.RawMessage
}

// Filter decides whether a subscriber sees a change. It is never asked
// about bookmarks.
type Filter func(Event) bool

// Hub owns the one etcd watch of a replica. Run it; Subscribe from anywhere.
type Hub struct {
	cli *clientv3.Client
	cfg Config
	log *slog.Logger

	ready chan struct{} // closed once the shared watch has a start revision

	mu sync.Mutex
	// lastEvent is the revision of the newest event dispatched: an event
	// under the root exists at exactly this revision, so a replay from
	// the past knows where to stop.
	lastEvent int64
	// progress is the newest revision every event up to which has been
	// dispatched (from etcd's progress notifications); >= lastEvent.
	progress int64
	subs     map[*Sub]struct{}
	closed   bool

	// fmu guards counts, the fleet's tally (fleet.go). It is apart from
	// mu so that a scrape never waits behind a dispatch to subscribers.
	fmu    sync.Mutex
	counts counts
}

// New returns a hub over cli; it watches nothing until Run.
func New(cli *clientv3.Client, cfg Config, log *slog.Logger) *Hub {
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Bookmark <= 0 {
		cfg.Bookmark = DefaultBookmark
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{cli: cli, cfg: cfg, log: log, ready: make(chan struct{}), subs: make(map[*Sub]struct{}), counts: newCounts()}
}

// Run keeps the shared watch until ctx ends, then drops every subscriber
// with ErrClosed. A watch that etcd cancels (a compaction overtook it, a
// lost leader) drops every subscriber with ErrResync and starts again.
func (h *Hub) Run(ctx context.Context) {
	defer h.shutdown()
	// A replica without quorum cannot start a watch (its start revision is
	// a linearizable read): retry with a growing delay, so an outage is a
	// few log lines, and at once again after a watch that ran.
	delay := restartMin
	for ctx.Err() == nil {
		started := time.Now()
		err := h.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > restartMax {
			delay = restartMin
		}
		h.log.Warn("watch hub restarts", "err", err, "in", delay)
		h.dropAll(ErrResync)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, restartMax)
	}
}

// errNoQuorum ends the shared watch when the member loses its leader.
var errNoQuorum = errors.New("watch hub: this replica lost quorum")

// Delays between two attempts of the shared watch.
const (
	restartMin = 100 * time.Millisecond
	restartMax = 2 * time.Second
)

// startRevision is the newest modification revision under the root: an
// event exists there (unless compacted away), which catch-up replays use
// as their end.
func (h *Hub) startRevision(ctx context.Context) (int64, error) {
	resp, err := h.cli.Get(ctx, store.Root, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

func (h *Hub) watchOnce(ctx context.Context) error {
	start, err := h.startRevision(ctx)
	if err != nil {
		return fmt.Errorf("watch hub: read start revision: %w", err)
	}
	h.mu.Lock()
	// A subscriber that joined while the previous watch was down was
	// promised events from an older revision than this watch starts at.
	for s := range h.subs {
		h.dropLocked(s, ErrResync)
	}
	h.lastEvent, h.progress = start, max(start, h.progress)
	h.mu.Unlock()
	h.markReady()
	var lost <-chan struct{}
	if h.cfg.Quorum != nil {
		qctx, ok := h.cfg.Quorum.QuorumContext()
		if !ok {
			return errNoQuorum
		}
		lost = qctx.Done()
	}
	// The fleet's counts are the rows at start, read aside so streams are
	// not held up by it, plus every change from start+1, which the watch
	// below adds as it goes.
	h.fmu.Lock()
	h.counts = newCounts()
	h.fmu.Unlock()
	countCtx, stopCount := context.WithCancel(ctx)
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		h.countBase(countCtx, start)
	}()
	defer func() {
		stopCount()
		<-counted
	}()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := h.cli.Watch(wctx, store.Root, clientv3.WithPrefix(), clientv3.WithRev(start+1), clientv3.WithPrevKV())
	tick := time.NewTicker(h.cfg.Bookmark)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lost:
			return errNoQuorum
		case <-tick.C:
			h.bookmark()
			// The answer moves the bookmark revision past writes outside
			// the watched types, so idle streams advance too.
			if err := h.cli.RequestProgress(wctx); err != nil {
				h.log.Debug("watch hub: request progress", "err", err)
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch hub: watch channel closed")
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch hub: %w", err)
			}
			if resp.IsProgressNotify() {
				h.mu.Lock()
				h.progress = max(h.progress, resp.Header.Revision)
				h.mu.Unlock()
				continue
			}
			h.dispatch(resp.Events)
		}
	}
}

// dispatch hands a batch of events to every subscriber whose filter takes
// them. A subscriber whose buffer is full is dropped with ErrResync: the
// hub never waits for a slow reader.
func (h *Hub) dispatch(evs []*clientv3.Event) {
	out := make([]Event, 0, len(evs))
	last := int64(0)
	h.fmu.Lock()
	for _, ev := range evs {
		h.counts.apply(ev)
		last = ev.Kv.ModRevision
	}
	h.counts.rev = max(h.counts.rev, last)
	h.fmu.Unlock()
	for _, ev := range evs {
		if e, ok := convert(ev); ok {
			out = append(out, e)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if last > 0 {
		h.lastEvent = last
		h.progress = max(h.progress, last)
	}
	for s := range h.subs {
		for _, e := range out {
			if e.Rev <= s.from || !s.filter(e) {
				continue
			}
			if !h.offer(s, e) {
				break
			}
		}
	}
}

// bookmark offers every subscriber the revision all events up to which it
// has been sent.
func (h *Hub) bookmark() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if h.progress > s.from {
			h.offer(s, Event{Rev: h.progress, Kind: Bookmark})
		}
	}
}

// offer queues e for s, or drops s when its buffer is full. Called with
// h.mu held.
func (h *Hub) offer(s *Sub, e Event) bool {
	select {
	case s.live <- e:
		return true
	default:
		h.dropLocked(s, ErrResync)
		return false
	}
}

func (h *Hub) dropLocked(s *Sub, err error) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	s.endErr = err
	close(s.live)
}

func (h *Hub) dropAll(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		h.dropLocked(s, err)
	}
}

func (h *Hub) shutdown() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.dropAll(ErrClosed)
	h.markReady()
}

// markReady lets Subscribe proceed. Only Run's goroutine calls it, so the
// check and the close cannot race.
func (h *Hub) markReady() {
	select {
	case <-h.ready:
	default:
		close(h.ready)
	}
}

// Subscribers is how many subscribers the hub feeds now.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// convert renders one etcd event as the API shows the resource, or reports
// that the key is not a watched resource row.
func convert(ev *clientv3.Event) (Event, bool) {
	typ, id, ok := rowOf(string(ev.Kv.Key))
	if !ok {
		return Event{}, false
	}
	e := Event{Rev: ev.Kv.ModRevision, Type: typ, ID: id}
	value, rev := ev.Kv.Value, ev.Kv.ModRevision
	switch {
	case ev.Type == mvccpb.DELETE && typ == Events:
		// Retention deletes old events: not a change anyone follows.
		return Event{}, false
	case ev.Type == mvccpb.DELETE:
		e.Kind = Deleted
		if ev.PrevKv == nil {
			// Without the previous value the owner is unknown: a scoped
			// subscriber must not see it, so the event carries no owner
			// and only the id.
			e.Data, _ = json.Marshal(map[string]string{"id": id})
			return e, true
		}
		value, rev = ev.PrevKv.Value, ev.PrevKv.ModRevision
	case ev.IsCreate():
		e.Kind = Added
	default:
		e.Kind = Modified
	}
	data, owner, err := render(typ, value, rev)
	if err != nil {
		return Event{}, false
	}
	e.Data, e.Owner = data, owner
	if typ == Events {
		var le messages.Event
		if json.Unmarshal(value, &le) != nil {
			return Event{}, false
		}
		e.Object = le.Object.Kind
	}
	return e, true
}

// rowOf splits a row key /otherix/<type>/<id> of a watched type.
func rowOf(key string) (typ, id string, ok bool) {
	rest, found := strings.CutPrefix(key, store.Root)
	if !found {
		return "", "", false
	}
	typ, id, found = strings.Cut(rest, "/")
	if !found || id == "" || strings.Contains(id, "/") {
		return "", "", false
	}
	switch typ {
	case VMs, Tasks, Nodes, Networks, Events:
		return typ, id, true
	}
	return "", "", false
}

// render decodes a row into its API type, sets its revision as the store
// does, and encodes it again: the bytes GET would answer.
func render(typ string, value []byte, rev int64) (json.RawMessage, string, error) {
	var (
		v     store.Entity
		owner func() string
	)
	switch typ {
	case VMs:
		vm := new(messages.VM)
		v, owner = vm, func() string { return vm.Owner }
	case Tasks:
		t := new(messages.Task)
		v, owner = t, func() string { return t.Owner }
	case Nodes:
		v, owner = new(messages.Node), func() string { return "" }
	case Networks:
		v, owner = new(messages.Network), func() string { return "" }
	case Events:
		ev := new(messages.Event)
		v, owner = ev, func() string { return ev.Owner }
	default:
		return nil, "", fmt.Errorf("watch: unknown type %q", typ)
	}
	if err := json.Unmarshal(value, v); err != nil {
		return nil, "", err
	}
	v.SetEntityRevision(rev)
	b, err := json.Marshal(v)
	return b, owner(), err
}
