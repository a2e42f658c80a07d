//go:build etcd

package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

const testQuota = 4 << 20

func startSmall(t *testing.T) (*etcd.Member, *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: t.TempDir(), QuotaBytes: testQuota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	st := store.New(m.Client(), store.WithMaxTxnOps(m.MaxTxnOps()))
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	return m, st
}

// fillWithAudit appends padded audit entries until the store refuses them
// for space, as a flood of anonymous login attempts would, and checks the
// refusal is storage_full.
func fillWithAudit(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	pad := strings.Repeat("a", 512)
	for i := 0; i < 100_000; i++ {
		batch := make([]messages.AuditEntry, 64)
		for j := range batch {
			batch[j] = messages.AuditEntry{Time: time.Now(), Actor: pad, Action: "auth.login", Result: "failed"}
		}
		err := st.AppendAudit(ctx, batch)
		if err == nil {
			continue
		}
		var e *messages.Error
		if !errors.As(err, &e) || e.Kind != messages.KindStorageFull || e.Code != "storage_full" || !store.IsNoSpace(err) {
			t.Fatalf("write refused with %#v (%v), want kind storage full, code storage_full", e, err)
		}
		return
	}
	t.Fatal("the store never filled up")
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestStorageRecoversFullStore: a store filled with audit entries stays
// full while they are within retention (the loop says so and leaves the
// alarm), and recovers by itself once they have aged: the sweep deletes
// them, the loop compacts, defragments and disarms, and writes work again.
// Boot steps that only need to read (the settings seed, the key ring) work
// on the full store throughout.
func TestStorageRecoversFullStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, st := startSmall(t)
	if _, _, err := st.LoadOrCreateKeyRing(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	fillWithAudit(t, st)

	if seeded, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil || seeded {
		t.Fatalf("seed settings on a full store = %v, %v; want not seeded, no error", seeded, err)
	}
	if _, _, err := st.LoadOrCreateKeyRing(ctx, time.Now()); err != nil {
		t.Fatalf("load key ring on a full store: %v", err)
	}
	if _, err := st.Settings(ctx); err != nil {
		t.Fatalf("read on a full store: %v", err)
	}

	// Retention keeps every entry: nothing can go, the loop reports it.
	keep := identity.Cleanup(st, discard(), 24*time.Hour)
	run := Storage(m, keep, StoragePolicy{}, discard())
	if err := run(ctx); !errors.Is(err, ErrStillFull) {
		t.Fatalf("storage loop with nothing to delete = %v, want ErrStillFull", err)
	}
	s, err := m.Status(ctx)
	if err != nil || !s.NoSpace || s.Defrags != 0 {
		t.Fatalf("after a run that could not free space: %+v, %v; want the alarm kept and no defragmentation", s, err)
	}

	// The entries age past retention: the loop frees them and disarms.
	aged := identity.Cleanup(st, discard(), time.Nanosecond)
	if err := Storage(m, aged, StoragePolicy{}, discard())(ctx); err != nil {
		t.Fatalf("storage loop with aged entries: %v", err)
	}
	s, err = m.Status(ctx)
	if err != nil || s.NoSpace || s.DBSize >= testQuota/2 {
		t.Fatalf("after recovery: %+v, %v; want the alarm disarmed and a small file", s, err)
	}
	if err := st.AppendAudit(ctx, []messages.AuditEntry{{Time: time.Now(), Actor: "x", Action: "a", Result: "ok"}}); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
}

// TestStorageDefragmentsWhenWorthIt: the loop leaves a file with few free
// pages alone and defragments one whose free pages pass the policy.
func TestStorageDefragmentsWhenWorthIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, st := startSmall(t)
	cli := st.Client()
	val := strings.Repeat("v", 32<<10)
	for i := 0; i < 48; i++ { // 1.5 MiB, well under the quota
		if _, err := cli.Put(ctx, fmt.Sprintf("/junk/%03d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/junk/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CompactAll(ctx); err != nil {
		t.Fatal(err)
	}
	// The compaction's freed pages stay pending in bbolt until a later write
	// transaction, and etcd recounts the space in use only when it commits
	// one: a small write each round makes that happen instead of waiting for
	// unrelated background writes (which made this wait time out once).
	var before etcd.Status
	if !testutil.Until(30*time.Second, 20*time.Millisecond, func() bool {
		if _, err := cli.Put(ctx, "/tick", "x"); err != nil {
			t.Fatal(err)
		}
		var err error
		if before, err = m.Status(ctx); err != nil {
			t.Fatal(err)
		}
		return before.Free() >= 1<<20
	}) {
		t.Fatalf("compaction freed no pages: %+v", before)
	}

	strict := StoragePolicy{MinFreeBytes: 64 << 20}
	if err := Storage(m, nil, strict, discard())(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := m.Status(ctx); s.Defrags != 0 {
		t.Fatalf("defragmented %d times with %d bytes free under a 64 MiB threshold", s.Defrags, before.Free())
	}
	if err := Storage(m, nil, StoragePolicy{MinFreeBytes: 1 << 20}, discard())(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Defrags != 1 || after.DBSize >= before.DBSize {
		t.Fatalf("with %d bytes free: before %+v after %+v; want one defrag and a smaller file", before.Free(), before, after)
	}
}
