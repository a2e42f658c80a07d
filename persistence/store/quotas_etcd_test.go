//go:build etcd

package store_test

import (
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
