//go:build etcd

package store_test

import (
	"context"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// countingKV counts the reads (Get) a store makes.
type countingKV struct {
	clientv3.KV
	gets atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key, opts...)
}

// TestUserByEmailUnknownCostsTheSameReads: an unknown email makes as many
// etcd reads as a known one, so login timing does not reveal accounts.
func TestUserByEmailUnknownCostsTheSameReads(t *testing.T) {
	ctx := t.Context()
	m := startMember(t, 0)
	cli := m.Client()
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	s := store.New(cli, store.WithMaxTxnOps(m.MaxTxnOps()))
	u := newUser("known@example.com", "developer")
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), u)); err != nil {
		t.Fatal(err)
	}
	reads := func(email string) int64 {
		before := kv.gets.Load()
		_, _ = s.UserByEmail(ctx, email)
		return kv.gets.Load() - before
	}
	known, unknown := reads("known@example.com"), reads("nobody@example.com")
	if known != unknown || known == 0 {
		t.Fatalf("known email: %d reads, unknown: %d; want equal", known, unknown)
	}
	if _, err := s.UserByEmail(ctx, "nobody@example.com"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("unknown email = %v, want not found", err)
	}
}
