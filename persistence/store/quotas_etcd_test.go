//go:build etcd

package store_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func quotaVM(owner, name string, cpus int) *messages.VM {
	now := time.Now().UTC()
	return &messages.VM{ID: messages.NewID(), Name: name, Owner: owner, Generation: 1,
		Spec:      messages.VMSpec{CPUs: cpus, MemoryMiB: 512, DiskGiB: 10},
		CreatedAt: now, UpdatedAt: now}
}

// TestUsageCountsVMsThatPredateIt: VMs written before usage counters existed
// are counted from their rows; the first charge creates the counter from
// that count, and later ones move it, a release included.
func TestUsageCountsVMsThatPredateIt(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	u := newUser("old@example.com", "developer")
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), u)); err != nil {
		t.Fatal(err)
	}
	old1, old2 := quotaVM(u.ID, "a", 2), quotaVM(u.ID, "b", 1)
	for _, vm := range []*messages.VM{old1, old2} {
		if err := s.Commit(ctx, store.CreateVM(store.NewTxn(), vm)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.Usage(ctx, u.ID); err != nil || got != (messages.Usage{VMs: 2, CPUs: 3, MemoryMiB: 1024, DiskGiB: 20}) {
		t.Fatalf("usage counted from rows: %+v %v", got, err)
	}
	three := int64(3)
	if err := s.SetQuota(ctx, u.ID, messages.Quota{VMs: &three}); err != nil {
		t.Fatal(err)
	}
	create := func(vm *messages.VM) error {
		return s.WithUsage(ctx, u.ID, messages.UsageOf(vm.Spec), func(charge store.Charge) error {
			t := store.CreateVM(store.NewTxn(), vm)
			charge(t)
			return s.Commit(ctx, t)
		})
	}
	if err := create(quotaVM(u.ID, "c", 1)); err != nil {
		t.Fatal(err)
	}
	if err := create(quotaVM(u.ID, "d", 1)); messages.KindOf(err) != messages.KindUnprocessable {
		t.Fatalf("a fourth vm under a quota of three: %v", err)
	}
	// Releasing an old VM's share frees a place.
	err := s.WithUsage(ctx, u.ID, messages.Usage{}.Sub(messages.UsageOf(old1.Spec)), func(charge store.Charge) error {
		t := store.DeleteVM(store.NewTxn(), old1)
		charge(t)
		return s.Commit(ctx, t)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Usage(ctx, u.ID); err != nil || got != (messages.Usage{VMs: 2, CPUs: 2, MemoryMiB: 1024, DiskGiB: 20}) {
		t.Fatalf("usage after the release: %+v %v", got, err)
	}
	if err := create(quotaVM(u.ID, "d", 1)); err != nil {
		t.Fatalf("create after the release: %v", err)
	}
	// A quota for a user that does not exist is refused; deleting the
	// user removes both documents.
	if err := s.SetQuota(ctx, messages.NewID(), messages.Quota{VMs: &three}); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("quota of a missing user: %v", err)
	}
	if err := s.Commit(ctx, store.DeleteUser(store.NewTxn(), u)); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{store.RowKey("quotas", u.ID), store.RowKey("usage", u.ID)} {
		if resp, err := s.Client().Get(ctx, key); err != nil || len(resp.Kvs) != 0 {
			t.Errorf("%s after the user's deletion: %v %v", key, resp, err)
		}
	}
}

// TestQuotaAcrossReplicas: creates racing from two replicas (two stores over
// one etcd, so the in-process queue does not order them) for the last places
// of a quota never exceed it, and the quota set or lifted meanwhile is what
// later charges see.
func TestQuotaAcrossReplicas(t *testing.T) {
	ctx := t.Context()
	a := startStore(t)
	b := store.New(a.Client(), store.WithMaxTxnOps(a.MaxTxnOps()))
	u := newUser("race@example.com", "developer")
	if err := a.Commit(ctx, store.CreateUser(store.NewTxn(), u)); err != nil {
		t.Fatal(err)
	}
	const limit, racers = 5, 24
	max := int64(limit)
	if err := a.SetQuota(ctx, u.ID, messages.Quota{VMs: &max}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range racers {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm := quotaVM(u.ID, fmt.Sprintf("r%d", i), 1)
			err := s.WithUsage(ctx, u.ID, messages.UsageOf(vm.Spec), func(charge store.Charge) error {
				t := store.CreateVM(store.NewTxn(), vm)
				charge(t)
				return s.Commit(ctx, t)
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case messages.KindOf(err) != messages.KindUnprocessable:
				t.Errorf("create r%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	vms, _, err := a.ListVMs(ctx, u.ID, store.Page{Limit: 100})
	if ok != limit || err != nil || len(vms) != limit {
		t.Fatalf("%d creates passed, %d vms stored (%v); want %d", ok, len(vms), err, limit)
	}
	if got, err := b.Usage(ctx, u.ID); err != nil || got.VMs != limit {
		t.Fatalf("usage %+v %v", got, err)
	}
	// Lifting the quota drops the counter; a create then guards only the
	// quota's absence, and the usage read counts the rows.
	if err := a.SetQuota(ctx, u.ID, messages.Quota{}); err != nil {
		t.Fatal(err)
	}
	if resp, err := a.Client().Get(ctx, store.RowKey("usage", u.ID)); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("counter after lifting the quota: %v %v", resp, err)
	}
	extra := quotaVM(u.ID, "extra", 1)
	if err := b.WithUsage(ctx, u.ID, messages.UsageOf(extra.Spec), func(charge store.Charge) error {
		t := store.CreateVM(store.NewTxn(), extra)
		charge(t)
		return b.Commit(ctx, t)
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Usage(ctx, u.ID); err != nil || got.VMs != limit+1 {
		t.Fatalf("usage without a quota %+v %v", got, err)
	}
}
