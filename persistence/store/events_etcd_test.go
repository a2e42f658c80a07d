//go:build etcd

package store_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// entropy keeps the test's ids in the order they are made, as NewID does.
var entropy = ulid.Monotonic(rand.Reader, 0)

// eventAt is an event whose id was minted at t, as a writer at t would.
func eventAt(t time.Time, typ, name, owner string) *messages.Event {
	e := messages.NewEvent(typ, "Test", messages.EventObject{Kind: messages.EventObjectKind(typ), ID: "id-" + name, Name: name}, owner, "", t)
	e.ID = strings.ToLower(ulid.MustNew(ulid.Timestamp(t), entropy).String())
	return e
}

// putEvents commits events in transactions under the op limit.
func putEvents(t *testing.T, s *store.Store, evs []*messages.Event) {
	t.Helper()
	for start := 0; start < len(evs); start += s.MaxTxnOps() {
		tx := store.AddEvents(store.NewTxn(), evs[start:min(start+s.MaxTxnOps(), len(evs))]...)
		if err := s.Commit(context.Background(), tx); err != nil {
			t.Fatal(err)
		}
	}
}

func eventIDs(t *testing.T, s *store.Store) []string {
	t.Helper()
	resp, err := s.Client().Get(context.Background(), store.RowPrefix(store.Events), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range resp.Kvs {
		ids = append(ids, string(k.Key)[len(store.RowPrefix(store.Events)):])
	}
	return ids
}

// TestPruneEvents: retention removes events older than the age, then the
// oldest beyond the count, in transactions under the op limit, and keeps
// the newest.
func TestPruneEvents(t *testing.T) {
	s := startStore(t)
	ctx := context.Background()
	now := time.Now()
	var old, recent []*messages.Event
	for range 300 { // more than one transaction's worth
		old = append(old, eventAt(now.Add(-3*time.Hour), messages.EventVMStarted, "old", "u"))
	}
	for range 5 {
		recent = append(recent, eventAt(now, messages.EventVMStopped, "new", "u"))
	}
	putEvents(t, s, append(old, recent...))
	n, err := s.PruneEvents(ctx, 1000, now.Add(-time.Hour))
	if err != nil || n != 300 {
		t.Fatalf("pruned %d by age, %v; want 300", n, err)
	}
	if ids := eventIDs(t, s); len(ids) != 5 {
		t.Fatalf("%d events left, want 5", len(ids))
	}
	n, err = s.PruneEvents(ctx, 2, time.Time{})
	if err != nil || n != 3 {
		t.Fatalf("pruned %d by count, %v; want 3", n, err)
	}
	ids := eventIDs(t, s)
	if len(ids) != 2 || ids[0] != recent[3].ID || ids[1] != recent[4].ID {
		t.Fatalf("left %v, want the newest two %s %s", ids, recent[3].ID, recent[4].ID)
	}
	if n, err := s.PruneEvents(ctx, 2, now.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("nothing to prune: %d, %v", n, err)
	}
}

// TestListEvents: filters by type, object, time and visibility; pages with
// a cursor; and a filter that matches little reads a bounded number of
// events per page, answering a short page with a cursor.
func TestListEvents(t *testing.T) {
	s := startStore(t)
	ctx := context.Background()
	now := time.Now()
	var evs []*messages.Event
	evs = append(evs, eventAt(now.Add(-2*time.Hour), messages.EventVMCreated, "a", "u1"))
	evs = append(evs, eventAt(now.Add(-time.Minute), messages.EventVMStarted, "a", "u1"))
	evs = append(evs, eventAt(now.Add(-time.Minute), messages.EventVMStarted, "b", "u2"))
	evs = append(evs, eventAt(now.Add(-time.Minute), messages.EventNodeReady, "n1", ""))
	evs = append(evs, eventAt(now.Add(-time.Minute), messages.EventTaskFailed, "a", "u1"))
	putEvents(t, s, evs)
	list := func(f store.EventFilter, p store.Page) ([]string, string) {
		t.Helper()
		got, next, err := s.ListEvents(ctx, f, p)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range got {
			if e.Revision == 0 {
				t.Fatalf("event %s without its revision", e.ID)
			}
			out = append(out, e.Type+":"+e.Object.Name)
		}
		return out, next
	}
	for _, tc := range []struct {
		name string
		f    store.EventFilter
		want string
	}{
		{"all", store.EventFilter{}, "vm.created:a vm.started:a vm.started:b node.ready:n1 task.failed:a"},
		{"kind", store.EventFilter{Type: "vm"}, "vm.created:a vm.started:a vm.started:b"},
		{"type", store.EventFilter{Type: "vm.started"}, "vm.started:a vm.started:b"},
		{"object", store.EventFilter{Object: "a"}, "vm.created:a vm.started:a task.failed:a"},
		{"object id", store.EventFilter{Object: "id-b"}, "vm.started:b"},
		{"since", store.EventFilter{Since: now.Add(-10 * time.Minute), Type: "vm"}, "vm.started:a vm.started:b"},
		{"visible", store.EventFilter{Visible: func(e *messages.Event) bool { return e.Owner == "u2" }}, "vm.started:b"},
	} {
		got, next := list(tc.f, store.Page{})
		if strings.Join(got, " ") != tc.want || next != "" {
			t.Errorf("%s: %v (next %q), want %s", tc.name, got, next, tc.want)
		}
	}
	// Pages of two, the cursor going on where the last one stopped.
	var all []string
	cursor := ""
	for range 10 {
		page, next := list(store.EventFilter{}, store.Page{Limit: 2, Cursor: cursor})
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(all) != 5 {
		t.Fatalf("paged %v", all)
	}

	// Many events the caller may not see before one it may: the first page
	// stops after MaxEventScan reads, empty, with a cursor to go on.
	var hidden []*messages.Event
	for range store.MaxEventScan + 10 {
		hidden = append(hidden, eventAt(now, messages.EventVMStarted, "x", "other"))
	}
	putEvents(t, s, append(hidden, eventAt(now, messages.EventVMStopped, "mine", "me")))
	mine := store.EventFilter{Visible: func(e *messages.Event) bool { return e.Owner == "me" }, Since: now.Add(-time.Second)}
	got, next := list(mine, store.Page{Limit: 50})
	if len(got) != 0 || next == "" {
		t.Fatalf("first page %v, next %q: want none and a cursor", got, next)
	}
	got, next = list(mine, store.Page{Limit: 50, Cursor: next})
	if strings.Join(got, " ") != "vm.stopped:mine" || next != "" {
		t.Fatalf("second page %v, next %q", got, next)
	}
}
