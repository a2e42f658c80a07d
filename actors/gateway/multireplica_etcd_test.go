//go:build etcd

package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// startReplicaGateway starts a second gateway, as another replica would run
// it, over the same etcd as st: its own actor system, so its own VM actors.
func startReplicaGateway(t *testing.T, st *store.Store, cfg gateway.Config, name string) *gateway.Gateway {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg.Replica = name
	cfg.CleanupInterval = time.Hour
	if cfg.AskTimeout == 0 {
		cfg.AskTimeout = 5 * time.Second
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	g, err := gateway.Start(ctx, st, cfg, log)
	if err != nil {
		t.Fatalf("start gateway %s: %v", name, err)
	}
	t.Cleanup(g.Close)
	if err := g.Ready(ctx); err != nil {
		t.Fatalf("gateway %s not ready: %v", name, err)
	}
	return g
}

// TestVMActorsOnTwoReplicas: a VM's actor alive on two replicas. What one
// replica changes, the other's actor answers at once: a read, and a command
// it decides without writing (a stop refused as busy), are never answered
// from the row it held before. Before actors read again (entity MaxStale),
// replica A kept answering the create's task in progress after replica B
// had cancelled it, and refused A's stop as vm_busy.
func TestVMActorsOnTwoReplicas(t *testing.T) {
	a, st := startGateway(t, slowJobs())
	b := startReplicaGateway(t, st, slowJobs(), "replica-b")
	ctx := t.Context()
	vm, task := createVM(t, a, "shared")
	if !testutil.Until(20*time.Second, 5*time.Millisecond, func() bool {
		j, err := st.GetJob(ctx, task.JobID)
		return err == nil && j.Attempts == 1 && j.LastError != ""
	}) {
		t.Fatal("first attempt of the create job was not recorded")
	}
	// Both actors hold the VM, busy with its create.
	for _, g := range []*gateway.Gateway{a, b} {
		if got := getVM(t, g, vm.ID); got.Status.ActiveTask != task.ID {
			t.Fatalf("vm before cancel: active task %q", got.Status.ActiveTask)
		}
		if !g.VMActorRunning(vm.ID) {
			t.Fatal("vm actor not running after a get")
		}
	}
	if _, err := b.CancelTask(ctx, owner, task.ID); err != nil {
		t.Fatalf("cancel through b: %v", err)
	}
	got := getVM(t, a, vm.ID)
	if got.Status.ActiveTask != "" || got.Status.Phase != messages.PhaseStopped {
		t.Fatalf("a answers active task %q, phase %s after b cancelled the create", got.Status.ActiveTask, got.Status.Phase)
	}
	if !a.VMActorRunning(vm.ID) {
		t.Fatal("a's vm actor passivated: the get did not test its state")
	}
	_, start, err := a.VMTask(ctx, owner, vm.ID, messages.TaskVMStart, false)
	if err != nil {
		t.Fatalf("start through a after b's cancel: %v", err)
	}
	// And the other way: b's actor sees a's task and refuses its own.
	_, _, err = b.VMTask(ctx, owner, vm.ID, messages.TaskVMStop, false)
	if busy := wantCode(t, err, "vm_busy"); busy.Details["task_id"] != start.ID {
		t.Fatalf("b's vm_busy names %v, want a's start %s", busy.Details["task_id"], start.ID)
	}
}

// TestVMUpdatesRaceAcrossReplicas: two replicas update one VM at once,
// each a field of its own. A write that lost to the other replica's is
// planned again on the row as it is now, so no update is lost: the
// generation counts every acknowledged update and each field holds the last
// value its replica acknowledged; every read through either replica is the
// row as some instant between its call and its answer had it (its
// generation never goes back after a later-started read saw more).
func TestVMUpdatesRaceAcrossReplicas(t *testing.T) {
	cfg := fastJobs()
	cfg.PassivateAfter = time.Minute
	a, st := startGateway(t, cfg)
	b := startReplicaGateway(t, st, cfg, "replica-b")
	vm := failCreate(t, a, st, "race")
	const rounds = 40
	errs := make(chan error, 4)
	var writers, readers sync.WaitGroup
	update := func(g *gateway.Gateway, patch func(i int) messages.VMSpecPatch) {
		defer writers.Done()
		for i := 1; i <= rounds; i++ {
			_, err := g.UpdateVM(t.Context(), owner, vm.ID, messages.UpdateVMRequest{Spec: patch(i)})
			for try := 0; messages.KindOf(err) == messages.KindStale && try < 20; try++ {
				// Lost every replan to the other replica (revision_conflict,
				// nothing written): the caller sends it again.
				_, err = g.UpdateVM(t.Context(), owner, vm.ID, messages.UpdateVMRequest{Spec: patch(i)})
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}
	// Each read starts after the previous one answered, so the generations
	// a reader sees never go down.
	stop := make(chan struct{})
	read := func(g *gateway.Gateway) {
		defer readers.Done()
		last := int64(0)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := g.GetVM(t.Context(), owner, vm.ID)
			if err != nil {
				errs <- err
				return
			}
			if got.Generation < last {
				errs <- fmt.Errorf("a read answered generation %d after one answered %d", got.Generation, last)
				return
			}
			last = got.Generation
		}
	}
	readers.Add(2)
	go read(a)
	go read(b)
	writers.Add(2)
	go update(a, func(i int) messages.VMSpecPatch { c := i; return messages.VMSpecPatch{CPUs: &c} })
	go update(b, func(i int) messages.VMSpecPatch { m := 512 + 16*i; return messages.VMSpecPatch{MemoryMiB: &m} })
	writers.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	row, err := st.GetVM(t.Context(), vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if row.Spec.CPUs != rounds || row.Spec.MemoryMiB != 512+16*rounds || row.Generation != vm.Generation+2*rounds {
		t.Fatalf("after %d updates each: cpus %d memory %d generation %d (from %d): an update was lost",
			rounds, row.Spec.CPUs, row.Spec.MemoryMiB, row.Generation, vm.Generation)
	}
	for _, g := range []*gateway.Gateway{a, b} {
		if got := getVM(t, g, vm.ID); got.Revision != row.Revision {
			t.Fatalf("a replica answers revision %d, etcd has %d", got.Revision, row.Revision)
		}
	}
}
