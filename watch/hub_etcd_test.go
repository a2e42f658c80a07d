//go:build etcd

package watch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/watch"
)

// startHub runs a hub over a fresh embedded etcd until the test ends.
func startHub(t *testing.T, cfg watch.Config) (*watch.Hub, *clientv3.Client) {
	t.Helper()
	st := storetest.New(t)
	h := watch.New(st.Client(), cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h, st.Client()
}

func all(watch.Event) bool { return true }

// putVM writes a VM row as the store would, returning the write's revision.
func putVM(t *testing.T, cli *clientv3.Client, id, owner string, cpus int) int64 {
	t.Helper()
	b, _ := json.Marshal(messages.VM{ID: id, Name: id, Owner: owner, Spec: messages.VMSpec{CPUs: cpus}})
	resp, err := cli.Put(context.Background(), store.RowKey(store.VMs, id), string(b))
	if err != nil {
		t.Error(err)
		return 0
	}
	return resp.Header.Revision
}

// deadline bounds everything a test waits for, bookmarks or not: a loop
// that skips bookmarks must not wait forever for an event that never comes.
func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestListThenWatchExactlyOnce lists VMs at a pinned revision while writers
// keep changing them, then subscribes from that revision after more writes
// (so the stream is partly replayed from etcd's history, partly live): every
// write after the list arrives once, in order, and nothing from before.
func TestListThenWatchExactlyOnce(t *testing.T) {
	wait := deadline(t)
	h, cli := startHub(t, watch.Config{Buffer: 100000})
	st := store.New(cli)
	ctx := context.Background()
	const writers, perWriter = 4, 60
	var (
		mu     sync.Mutex
		writes = map[int64]string{} // revision → vm id
		wg     sync.WaitGroup
		listed = make(chan struct{})
		subbed = make(chan struct{})
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				switch i {
				case perWriter / 3:
					<-listed
				case 2 * perWriter / 3:
					<-subbed
				}
				id := fmt.Sprintf("vm-%d-%d", w, i%7)
				rev := putVM(t, cli, id, "u", i)
				mu.Lock()
				writes[rev] = id
				mu.Unlock()
			}
		}()
	}
	// List once a third of the writes are in, pinned to one revision.
	written := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(writes) >= n
		}
	}
	testutil.Eventually(t, 30*time.Second, time.Millisecond, "a quarter of the writes", written(writers*perWriter/4))
	lctx, rr := store.WithReadRevision(ctx)
	if _, _, err := st.ListVMs(lctx, "", store.Page{Limit: store.MaxPageSize}); err != nil {
		t.Fatal(err)
	}
	since := rr.Revision()
	close(listed)
	// Let more writes land before subscribing, so part of the stream is a
	// replay of history.
	testutil.Eventually(t, 30*time.Second, time.Millisecond, "half the writes", written(writers*perWriter/2))
	sub, err := h.Subscribe(ctx, since, func(e watch.Event) bool { return e.Type == watch.VMs })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	close(subbed)
	wg.Wait()
	want := map[int64]string{}
	for rev, id := range writes {
		if rev > since {
			want[rev] = id
		}
	}
	last := since
	for len(want) > 0 {
		e, err := sub.Next(wait)
		if err != nil {
			t.Fatalf("after %d: %v (%d writes not seen)", last, err, len(want))
		}
		if e.Kind == watch.Bookmark {
			continue
		}
		if e.Rev <= last {
			t.Fatalf("event at %d after %d: out of order or repeated", e.Rev, last)
		}
		last = e.Rev
		id, ok := want[e.Rev]
		if !ok || id != e.ID {
			t.Fatalf("unexpected event %s %s at %d (listed at %d)", e.Kind, e.ID, e.Rev, since)
		}
		var vm messages.VM
		if err := json.Unmarshal(e.Data, &vm); err != nil || vm.ID != id || vm.Revision != e.Rev {
			t.Fatalf("event data %s: %v", e.Data, err)
		}
		delete(want, e.Rev)
	}
}

// TestCompactedSince refuses a start revision etcd no longer keeps.
func TestCompactedSince(t *testing.T) {
	wait := deadline(t)
	h, cli := startHub(t, watch.Config{})
	probe, err := h.Subscribe(context.Background(), 0, all)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	first := putVM(t, cli, "a", "u", 1)
	putVM(t, cli, "a", "u", 2)
	last := putVM(t, cli, "a", "u", 3)
	// Only history before what the hub has already seen is read from
	// etcd (later revisions come from the hub's own watch, established
	// before the compaction): wait until the hub has seen the writes.
	for {
		e, err := probe.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if e.Rev == last {
			break
		}
	}
	if _, err := cli.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	_, err = h.Subscribe(context.Background(), first, all)
	var ce *watch.CompactedError
	if !errors.As(err, &ce) || ce.Compacted != last {
		t.Fatalf("subscribe at %d after compaction at %d: %v", first, last, err)
	}
	// From the compaction revision on, history is there.
	s, err := h.Subscribe(context.Background(), last, all)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := h.Subscribe(context.Background(), last+100, all); !errors.Is(err, watch.ErrFutureRevision) {
		t.Fatalf("future since: %v", err)
	}
}

// TestSlowConsumerResync: a subscriber that does not read is dropped once
// its buffer is full, and learns it after what was buffered; the hub and
// other subscribers go on.
func TestSlowConsumerResync(t *testing.T) {
	wait := deadline(t)
	h, cli := startHub(t, watch.Config{Buffer: 4})
	ctx := context.Background()
	slow, err := h.Subscribe(ctx, 0, all)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := h.Subscribe(ctx, 0, all)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for i := range 10 {
		putVM(t, cli, "a", "u", i)
		for {
			e, err := fast.Next(wait)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind != watch.Bookmark {
				break
			}
		}
	}
	n := 0
	for {
		_, err := slow.Next(wait)
		if errors.Is(err, watch.ErrResync) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n++; n > 4 {
			t.Fatalf("read %d events from a buffer of 4", n)
		}
	}
	if h.Subscribers() != 1 {
		t.Fatalf("subscribers = %d, want the fast one only", h.Subscribers())
	}
}

// TestFilterAndDeletion: a filter sees a deletion with the row's last value
// (etcd's previous key), so an owner filter can hide other owners'
// deletions and show its own.
func TestFilterAndDeletion(t *testing.T) {
	wait := deadline(t)
	h, cli := startHub(t, watch.Config{})
	ctx := context.Background()
	mine, err := h.Subscribe(ctx, 0, func(e watch.Event) bool { return e.Owner == "me" })
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	putVM(t, cli, "theirs", "them", 1)
	putVM(t, cli, "mine", "me", 1)
	if _, err := cli.Delete(ctx, store.RowKey(store.VMs, "theirs")); err != nil {
		t.Fatal(err)
	}
	del, err := cli.Delete(ctx, store.RowKey(store.VMs, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		e, err := mine.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == watch.Bookmark {
			continue
		}
		if e.ID != "mine" {
			t.Fatalf("another owner's %s reached the filter: %+v", e.Kind, e)
		}
		got = append(got, e.Kind)
		if e.Kind == watch.Deleted && e.Rev != del.Header.Revision {
			t.Fatalf("deletion at %d, want %d", e.Rev, del.Header.Revision)
		}
	}
	if got[0] != watch.Added || got[1] != watch.Deleted {
		t.Fatalf("events %v", got)
	}
}

// TestBookmarkOnIdleStream: with nothing to send, a stream still gets
// bookmarks, and they advance past writes outside everything watched (only
// etcd's progress notifications can tell the hub about those).
func TestBookmarkOnIdleStream(t *testing.T) {
	wait := deadline(t)
	h, cli := startHub(t, watch.Config{Bookmark: 50 * time.Millisecond})
	ctx := context.Background()
	s, err := h.Subscribe(ctx, 0, func(e watch.Event) bool { return e.Type == watch.Nodes })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start, err := s.Next(wait)
	if err != nil || start.Kind != watch.Bookmark {
		t.Fatalf("first event %+v %v, want the starting bookmark", start, err)
	}
	other, err := cli.Put(ctx, "/elsewhere/key", "x")
	if err != nil {
		t.Fatal(err)
	}
	rev := other.Header.Revision
	for {
		e, err := s.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != watch.Bookmark {
			t.Fatalf("unexpected %+v", e)
		}
		if e.Rev >= rev {
			return
		}
	}
}
