// Package storetest gives tests a real store: an embedded etcd member in a
// temp dir, closed when the test ends, with the settings document seeded as a
// booting otherix-api seeds it. It is imported by tests only.
package storetest

import (
	"context"
	"testing"
	"time"

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
