//go:build etcd

package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func placedVM(name, node string, cpus, mem, disk int) *messages.VM {
	now := time.Now().UTC()
	return &messages.VM{ID: messages.NewID(), Name: name, Owner: "alloc", Generation: 1,
		Spec:      messages.VMSpec{CPUs: cpus, MemoryMiB: mem, DiskGiB: disk},
		Status:    messages.VMStatus{Node: node},
		CreatedAt: now, UpdatedAt: now}
}

// writeVMs writes VM rows straight to the store, as code from before
// allocation documents did.
func writeVMs(t *testing.T, s *store.Store, vms ...*messages.VM) {
	t.Helper()
	for _, vm := range vms {
		if err := s.Commit(t.Context(), store.CreateVM(store.NewTxn(), vm)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateAllocationsBuildsDocumentsOnce: a store whose VM rows predate
// allocation documents gets one document per node that has VMs, equal to
// the rows; a second run changes nothing, and a run after the marker was
// lost keeps the documents that exist.
func TestMigrateAllocationsBuildsDocumentsOnce(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	writeVMs(t, s, placedVM("a1", "a", 2, 512, 10), placedVM("a2", "a", 1, 1024, 5), placedVM("b1", "b", 4, 2048, 20),
		placedVM("p", "", 8, 8192, 80))
	if drift, _, err := s.CheckAllocations(ctx); err != nil || len(drift) != 2 {
		t.Fatalf("before the migration: drift %+v %v, want nodes a and b missing their documents", drift, err)
	}
	n, err := s.MigrateAllocations(ctx)
	if err != nil || n != 2 {
		t.Fatalf("migrate = %d %v, want 2 documents", n, err)
	}
	a, err := s.Allocation(ctx, "a")
	if err != nil || a.CPUs != 3 || a.MemoryMiB != 1536 || a.DiskGiB != 15 || len(a.VMs) != 2 || a.Revision == 0 {
		t.Fatalf("allocation of a = %+v %v", a, err)
	}
	if drift, _, err := s.CheckAllocations(ctx); err != nil || len(drift) != 0 {
		t.Fatalf("after the migration: drift %+v %v", drift, err)
	}
	if n, err := s.MigrateAllocations(ctx); err != nil || n != 0 {
		t.Fatalf("second migrate = %d %v, want nothing done", n, err)
	}
	if _, err := s.Client().Delete(ctx, "/otherix/migrations/allocations"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.MigrateAllocations(ctx); err != nil || n != 0 {
		t.Fatalf("migrate without the marker = %d %v, want the existing documents kept", n, err)
	}
	again, _ := s.Allocation(ctx, "a")
	if again.Revision != a.Revision {
		t.Fatalf("document of a rewritten: revision %d, was %d", again.Revision, a.Revision)
	}
}

// TestCheckAllocationsReportsDrift: a VM row written past its node's
// document is reported, as is a document counting a VM that is gone.
func TestCheckAllocationsReportsDrift(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	if _, err := s.MigrateAllocations(ctx); err != nil {
		t.Fatal(err)
	}
	vm := placedVM("x", "a", 1, 512, 1)
	if err := s.WithAllocations(ctx, nil, vm, nil, func(charge store.Charge) error {
		t := store.CreateVM(store.NewTxn(), vm)
		charge(t)
		return s.Commit(ctx, t)
	}); err != nil {
		t.Fatal(err)
	}
	if drift, _, err := s.CheckAllocations(ctx); err != nil || len(drift) != 0 {
		t.Fatalf("drift %+v %v, want none", drift, err)
	}
	writeVMs(t, s, placedVM("bypass", "a", 2, 256, 2))
	drift, _, err := s.CheckAllocations(ctx)
	if err != nil || len(drift) != 1 || drift[0].Node != "a" || drift[0].Stored.CPUs != 1 || drift[0].Counted.CPUs != 3 {
		t.Fatalf("drift %+v %v, want node a stored 1 cpu, counted 3", drift, err)
	}
}

// TestWithAllocationsLostCompareJudgesAgain: a change whose document moved
// between its read and its commit (another replica's placement) is not
// committed as read: it reads again, and admit judges the document as it
// is now, which refuses the second VM.
func TestWithAllocationsLostCompareJudgesAgain(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	other := store.New(s.Client(), store.WithMaxTxnOps(s.MaxTxnOps())) // another replica
	full := errors.New("full")
	oneVM := func(_ context.Context, _, to *messages.NodeAllocation) error {
		if len(to.VMs) > 1 {
			return full
		}
		return nil
	}
	place := func(st *store.Store, vm *messages.VM, before func()) error {
		return st.WithAllocations(ctx, nil, vm, oneVM, func(charge store.Charge) error {
			if before != nil {
				before()
				before = nil
			}
			t := store.CreateVM(store.NewTxn(), vm)
			charge(t)
			return st.Commit(ctx, t)
		})
	}
	first, second := placedVM("first", "n", 1, 1, 1), placedVM("second", "n", 1, 1, 1)
	calls := 0
	err := place(s, second, func() {
		calls++
		// Between this change's read and its commit, another replica
		// places the first VM.
		if err := place(other, first, nil); err != nil {
			t.Errorf("first placement: %v", err)
		}
	})
	if !errors.Is(err, full) {
		t.Fatalf("second placement = %v, want refused once the first took the node", err)
	}
	doc, _ := s.Allocation(ctx, "n")
	if len(doc.VMs) != 1 || doc.VMs[0] != first.ID {
		t.Fatalf("document %+v, want only the first vm", doc)
	}
	if _, err := s.GetVM(ctx, second.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("second vm row: %v, want none written", err)
	}
}

// TestWithAllocationsMovesAndReleases: a move uncounts the VM on one node
// and counts it on the other in one transaction; a delete removes the last
// VM's document.
func TestWithAllocationsMovesAndReleases(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	vm := placedVM("m", "a", 2, 1024, 4)
	commitWith := func(before, after *messages.VM, build func(*store.Txn)) {
		t.Helper()
		if err := s.WithAllocations(ctx, before, after, nil, func(charge store.Charge) error {
			tx := store.NewTxn()
			build(tx)
			charge(tx)
			return s.Commit(ctx, tx)
		}); err != nil {
			t.Fatal(err)
		}
	}
	commitWith(nil, vm, func(tx *store.Txn) { store.CreateVM(tx, vm) })
	moved := *vm
	moved.Status.Node = "b"
	moved.Spec.CPUs = 3
	commitWith(vm, &moved, func(tx *store.Txn) { tx.Update(store.VMs, &moved) })
	docs, err := s.Allocations(ctx, []string{"a", "b"})
	if err != nil || docs["a"].Revision != 0 || len(docs["a"].VMs) != 0 || docs["b"].CPUs != 3 || len(docs["b"].VMs) != 1 {
		t.Fatalf("after the move: a %+v, b %+v, %v", docs["a"], docs["b"], err)
	}
	commitWith(&moved, nil, func(tx *store.Txn) { store.DeleteVM(tx, &moved) })
	if b, _ := s.Allocation(ctx, "b"); b.Revision != 0 {
		t.Fatalf("after the delete: b %+v, want no document", b)
	}
	if drift, _, err := s.CheckAllocations(ctx); err != nil || len(drift) != 0 {
		t.Fatalf("drift %+v %v", drift, err)
	}
}

// TestRepairAllocations: a drifted document is rewritten to the count of
// the VM rows, and then nothing drifts.
func TestRepairAllocations(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	if _, err := s.MigrateAllocations(ctx); err != nil {
		t.Fatal(err)
	}
	writeVMs(t, s, placedVM("bypass", "a", 2, 256, 2))
	drift, repaired, err := s.RepairAllocations(ctx)
	if err != nil || len(drift) != 1 || repaired != 1 {
		t.Fatalf("repair = %+v, %d, %v; want node a repaired", drift, repaired, err)
	}
	if a, _ := s.Allocation(ctx, "a"); a.CPUs != 2 || len(a.VMs) != 1 {
		t.Fatalf("repaired document %+v", a)
	}
	if drift, _, err := s.CheckAllocations(ctx); err != nil || len(drift) != 0 {
		t.Fatalf("after the repair: drift %+v %v", drift, err)
	}
}
