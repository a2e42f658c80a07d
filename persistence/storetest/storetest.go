// Package storetest gives tests a real store: an embedded etcd member in a
// temp dir, closed when the test ends, with the settings document seeded as a
// booting otherix-api seeds it. It is imported by tests only.
package storetest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// New starts a member in tb.TempDir and returns a store over it. Cleanups
// registered after New run before the member closes, so a gateway started on
// the store stops while etcd is still there.
func New(tb testing.TB, opts ...store.Option) *store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start etcd member: %v", err)
	}
	tb.Cleanup(m.Close)
	st := store.New(m.Client(), append([]store.Option{store.WithMaxTxnOps(m.MaxTxnOps())}, opts...)...)
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		tb.Fatalf("seed settings: %v", err)
	}
	return st
}

// Events reads every lifecycle event in the store, in key order, each with
// its mod revision: the revision of the change it was written with.
func Events(tb testing.TB, st *store.Store) []*messages.Event {
	tb.Helper()
	resp, err := st.Client().Get(context.Background(), store.RowPrefix(store.Events), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		tb.Fatalf("read events: %v", err)
	}
	out := make([]*messages.Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e messages.Event
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			tb.Fatalf("event %s: %v", kv.Key, err)
		}
		e.Revision = kv.ModRevision
		out = append(out, &e)
	}
	return out
}

// NewEvents returns the events written since the store held seen of them
// (as Events counted), failing unless there are exactly want.
func NewEvents(tb testing.TB, st *store.Store, seen *int, want int) []*messages.Event {
	tb.Helper()
	all := Events(tb, st)
	fresh := all[*seen:]
	if len(fresh) != want {
		var types []string
		for _, e := range fresh {
			types = append(types, e.Type+"/"+e.Reason)
		}
		tb.Fatalf("%d new events %v, want %d", len(fresh), types, want)
	}
	*seen = len(all)
	return fresh
}
