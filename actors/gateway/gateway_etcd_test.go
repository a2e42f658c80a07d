//go:build etcd

package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

const owner = "alice"

// fastJobs makes a job fail its three attempts within a fraction of a second
// (there are no nodes, so every create attempt is refused).
func fastJobs() gateway.Config {
	return gateway.Config{ClaimTTL: 2 * time.Second, JobBackoffBase: 50 * time.Millisecond,
		JobBackoffMax: 200 * time.Millisecond, JobAttempts: 3, PassivateAfter: 200 * time.Millisecond}
}

// slowJobs keeps a job pending for an hour after its first failed attempt.
func slowJobs() gateway.Config {
	c := fastJobs()
	c.JobBackoffBase, c.JobBackoffMax = time.Hour, time.Hour
	return c
}

// startGateway runs the actor system over a fresh embedded etcd member.
func startGateway(t *testing.T, cfg gateway.Config) (*gateway.Gateway, *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := storetest.New(t)
	cfg.Replica = "test-replica"
	cfg.CleanupInterval = time.Hour
	if cfg.AskTimeout == 0 {
		cfg.AskTimeout = 5 * time.Second
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	g, err := gateway.Start(ctx, st, cfg, log)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	t.Cleanup(g.Close) // runs before the member closes
	if err := g.Ready(ctx); err != nil {
		t.Fatalf("gateway not ready: %v", err)
	}
	return g, st
}

func createVM(t *testing.T, g *gateway.Gateway, name string) (*messages.VM, *messages.Task) {
	t.Helper()
	vm, task, err := g.CreateVM(t.Context(), owner, messages.CreateVMRequest{Name: name,
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}}})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if task.State != messages.TaskPending || task.Kind != messages.TaskVMCreate || task.Target.ID != vm.ID {
		t.Fatalf("create answered task %+v", task)
	}
	return vm, task
}

// waitTask waits for a task to end and returns it.
func waitTask(t *testing.T, g *gateway.Gateway, id string) *messages.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	task, err := g.WaitTask(ctx, owner, id)
	if err != nil {
		t.Fatalf("wait task %s: %v", id, err)
	}
	if !messages.Terminal(task.State) {
		t.Fatalf("task %s still %s after 30s: %s", id, task.State, task.Message)
	}
	return task
}

func getVM(t *testing.T, g *gateway.Gateway, id string) *messages.VM {
	t.Helper()
	vm, err := g.GetVM(t.Context(), owner, id)
	if err != nil {
		t.Fatalf("get vm %s: %v", id, err)
	}
	return vm
}

func wantCode(t *testing.T, err error, code string) *messages.Error {
	t.Helper()
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	return e
}

func keyExists(t *testing.T, st *store.Store, key string) bool {
	t.Helper()
	resp, err := st.Client().Get(t.Context(), key, clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count > 0
}

// failCreate creates a VM and waits for its create task to give up.
func failCreate(t *testing.T, g *gateway.Gateway, st *store.Store, name string) *messages.VM {
	t.Helper()
	vm, task := createVM(t, g, name)
	done := waitTask(t, g, task.ID)
	if done.State != messages.TaskFailed || done.Error == nil || done.Error.Code != "no_schedulable_node" {
		t.Fatalf("create task = %s %+v, want failed with no_schedulable_node", done.State, done.Error)
	}
	if !strings.Contains(done.Message, "3 attempts") || done.FinishedAt == nil {
		t.Errorf("failed task message %q, finished %v; want it to give up after 3 attempts", done.Message, done.FinishedAt)
	}
	if _, err := st.GetJob(t.Context(), done.JobID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("job of the failed task: %v, want it removed", err)
	}
	got := getVM(t, g, vm.ID)
	if got.Status.Phase != messages.PhaseFailed || got.Status.ActiveTask != "" {
		t.Fatalf("vm after failed create: phase %s, active task %q", got.Status.Phase, got.Status.ActiveTask)
	}
	// It runs nowhere, and says so: the POWER column shows stopped.
	if got.Spec.PowerState != messages.PowerStopped {
		t.Fatalf("vm after failed create: power %s, want stopped", got.Spec.PowerState)
	}
	return got
}

func TestCreateFailsThenDeleteRemovesEverything(t *testing.T) {
	g, st := startGateway(t, fastJobs())
	vm := failCreate(t, g, st, "web")

	_, task, err := g.VMTask(t.Context(), owner, "web", messages.TaskVMDelete, false)
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if task.Kind != messages.TaskVMDelete || task.State != messages.TaskPending {
		t.Fatalf("delete answered %+v", task)
	}
	if done := waitTask(t, g, task.ID); done.State != messages.TaskSuccess {
		t.Fatalf("delete task = %s %+v, want success", done.State, done.Error)
	}
	if _, err := g.GetVM(t.Context(), owner, vm.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("get after delete: %v, want not found", err)
	}
	if keyExists(t, st, store.RowKey(store.VMs, vm.ID)) {
		t.Error("vm row left after delete")
	}
	if keyExists(t, st, store.UniqKey(store.VMs, "name", owner+"/web")) {
		t.Error("name guard left after delete")
	}
	if keyExists(t, st, store.IndexKey(store.VMs, store.VMOwnerIndex(owner), vm.ID)) {
		t.Error("owner index key left after delete")
	}
	// The name is free again.
	again, _ := createVM(t, g, "web")
	if again.ID == vm.ID {
		t.Error("re-create reused the deleted id")
	}
}

func TestStopNeverPlacedVM(t *testing.T) {
	g, st := startGateway(t, fastJobs())
	vm := failCreate(t, g, st, "db")
	_, task, err := g.VMTask(t.Context(), owner, vm.ID, messages.TaskVMStop, false)
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if done := waitTask(t, g, task.ID); done.State != messages.TaskSuccess {
		t.Fatalf("stop task = %s %+v, want success", done.State, done.Error)
	}
	got := getVM(t, g, vm.ID)
	if got.Status.Phase != messages.PhaseStopped || got.Spec.PowerState != messages.PowerStopped || got.Status.ActiveTask != "" {
		t.Errorf("vm after stop: phase %s power %s active %q", got.Status.Phase, got.Spec.PowerState, got.Status.ActiveTask)
	}
	// The failed create already set power stopped: the stop changes no spec.
	if got.Generation != vm.Generation || got.Status.ObservedGeneration != got.Generation {
		t.Errorf("generation %d observed %d, want %d observed", got.Generation, got.Status.ObservedGeneration, vm.Generation)
	}
	row, err := st.GetVM(t.Context(), vm.ID)
	if err != nil || row.Revision != got.Revision || row.Status.Phase != messages.PhaseStopped {
		t.Errorf("stored row %+v, %v differs from the actor's answer", row, err)
	}
}

func TestBusyVMAndCancelPendingCreate(t *testing.T) {
	g, st := startGateway(t, slowJobs())
	ctx := t.Context()
	vm, task := createVM(t, g, "api")

	// Let the first attempt fail; the job then waits an hour to retry.
	if !testutil.Until(20*time.Second, 5*time.Millisecond, func() bool {
		j, err := st.GetJob(ctx, task.JobID)
		return err == nil && j.Attempts == 1 && j.LastError != ""
	}) {
		t.Fatal("first attempt of the create job was not recorded")
	}
	pending, err := g.GetTask(ctx, owner, task.ID)
	if err != nil || pending.State != messages.TaskPending || !strings.Contains(pending.Message, "retrying") {
		t.Fatalf("task after one failed attempt = %+v, %v; want pending and retrying", pending, err)
	}

	_, _, err = g.VMTask(ctx, owner, vm.ID, messages.TaskVMStop, false)
	busy := wantCode(t, err, "vm_busy")
	if busy.Details["task_id"] != task.ID {
		t.Errorf("vm_busy names task %v, want %s", busy.Details["task_id"], task.ID)
	}

	cancelled, err := g.CancelTask(ctx, owner, task.ID)
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if cancelled.State != messages.TaskCancelled || cancelled.FinishedAt == nil {
		t.Fatalf("cancel answered %+v", cancelled)
	}
	if _, err := st.GetJob(ctx, task.JobID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("job after cancel: %v, want it removed", err)
	}
	if keyExists(t, st, store.Root+"claims/"+task.JobID) {
		t.Error("claim left after cancel")
	}
	got := getVM(t, g, vm.ID)
	if got.Status.Phase != messages.PhaseStopped || got.Spec.PowerState != messages.PowerStopped || got.Status.ActiveTask != "" {
		t.Errorf("vm after cancelled create: phase %s power %s active %q", got.Status.Phase, got.Spec.PowerState, got.Status.ActiveTask)
	}
	if done := waitTask(t, g, task.ID); done.State != messages.TaskCancelled {
		t.Errorf("wait on the cancelled task = %s", done.State)
	}

	_, err = g.CancelTask(ctx, owner, task.ID)
	wantCode(t, err, "task_terminal")
	if !errors.Is(err, messages.ErrTaskTerminal) {
		t.Error("second cancel does not match ErrTaskTerminal")
	}

	// No longer busy: the VM takes a new task.
	_, start, err := g.VMTask(ctx, owner, vm.ID, messages.TaskVMStart, false)
	if err != nil || start.State != messages.TaskPending {
		t.Fatalf("start after cancel = %+v, %v", start, err)
	}
}

func TestPassivatedVMAnswersFromEtcd(t *testing.T) {
	g, st := startGateway(t, fastJobs())
	vm := failCreate(t, g, st, "cache")
	for round := range 3 {
		if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool { return !g.VMActorRunning(vm.ID) }) {
			t.Fatalf("round %d: idle vm actor not passivated after PassivateAfter", round)
		}
		row, err := st.GetVM(t.Context(), vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := getVM(t, g, vm.ID)
		if got.Revision != row.Revision || got.Generation != row.Generation || got.Status.Phase != messages.PhaseFailed ||
			got.Name != "cache" || got.Owner != owner {
			t.Fatalf("round %d: reloaded vm %+v, stored %+v", round, got, row)
		}
		cpus := round + 2
		upd, err := g.UpdateVM(t.Context(), owner, vm.ID, messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &cpus}})
		if err != nil || upd.Generation != row.Generation+1 || upd.Spec.CPUs != cpus {
			t.Fatalf("round %d: update after reload = %+v, %v", round, upd, err)
		}
	}
}

// TestTinyPassivateAfter passivates as eagerly as protoactor allows (1ms), so
// the receive timeout fires while the actor waits for etcd and passivation
// races every message. Every actor must still passivate once idle, and no
// read or write may be lost, reordered or answered from stale state.
func TestTinyPassivateAfter(t *testing.T) {
	cfg := slowJobs()
	cfg.PassivateAfter = time.Millisecond
	g, _ := startGateway(t, cfg)
	const nVMs, updates = 4, 15
	var vms []*messages.VM
	for i := range nVMs {
		vm, _ := createVM(t, g, fmt.Sprintf("tiny-%d", i))
		vms = append(vms, vm)
	}
	for _, vm := range vms {
		if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool { return !g.VMActorRunning(vm.ID) }) {
			t.Fatalf("vm %s actor never passivated", vm.Name)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, nVMs*2)
	for _, vm := range vms {
		wg.Add(2)
		go func() { // writer: generations must count every update
			defer wg.Done()
			for i := range updates {
				mem := 512 + 64*(i+1)
				upd, err := g.UpdateVM(t.Context(), owner, vm.ID, messages.UpdateVMRequest{Spec: messages.VMSpecPatch{MemoryMiB: &mem}})
				if err != nil {
					errs <- fmt.Errorf("update %s #%d: %w", vm.Name, i, err)
					return
				}
				if upd.Generation != int64(i+2) {
					errs <- fmt.Errorf("update %s #%d: generation %d, want %d", vm.Name, i, upd.Generation, i+2)
					return
				}
			}
		}()
		go func() { // reader: never sees the generation go back
			defer wg.Done()
			last := int64(0)
			for range updates * 2 {
				got, err := g.GetVM(t.Context(), owner, vm.ID)
				if err != nil {
					errs <- fmt.Errorf("get %s: %w", vm.Name, err)
					return
				}
				if got.ID != vm.ID || got.Name != vm.Name || got.Generation < last {
					errs <- fmt.Errorf("get %s: %s gen %d after gen %d", vm.Name, got.Name, got.Generation, last)
					return
				}
				last = got.Generation
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, vm := range vms {
		if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool { return !g.VMActorRunning(vm.ID) }) {
			t.Errorf("vm %s actor not passivated after the load", vm.Name)
		}
		if got := getVM(t, g, vm.ID); got.Generation != 1+updates || got.Spec.MemoryMiB != 512+64*updates {
			t.Errorf("vm %s after load: generation %d memory %d", vm.Name, got.Generation, got.Spec.MemoryMiB)
		}
	}
}

func TestVMActorRestartKeepsState(t *testing.T) {
	cfg := fastJobs()
	cfg.PassivateAfter = time.Hour // the crash must hit a live actor
	g, st := startGateway(t, cfg)
	vm := failCreate(t, g, st, "stateful")
	cpus := 2
	v2, err := g.UpdateVM(t.Context(), owner, vm.ID, messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &cpus}})
	if err != nil || v2.Generation != 2 {
		t.Fatalf("update = %+v, %v; want generation 2", v2, err)
	}

	restarted := make(chan struct{}, 1)
	es := g.ActorSystem().EventStream
	sub := es.Subscribe(func(evt any) {
		e, ok := evt.(*actor.SupervisorEvent)
		if ok && e.Directive == actor.RestartDirective && strings.HasSuffix(e.Child.Id, "/vm-"+vm.ID) {
			select {
			case restarted <- struct{}{}:
			default:
			}
		}
	})
	defer es.Unsubscribe(sub)

	g.CrashVMForTest(vm.ID)
	select {
	case <-restarted:
	case <-time.After(10 * time.Second):
		t.Fatal("no restart event after the vm actor panicked")
	}
	got := getVM(t, g, vm.ID)
	if got.Generation != 2 || got.Revision != v2.Revision || got.Spec.CPUs != 2 {
		t.Fatalf("after restart: generation %d revision %d cpus %d; want 2, %d, 2", got.Generation, got.Revision, got.Spec.CPUs, v2.Revision)
	}
	mem := 1024
	v3, err := g.UpdateVM(t.Context(), owner, vm.ID, messages.UpdateVMRequest{Spec: messages.VMSpecPatch{MemoryMiB: &mem}, Revision: v2.Revision})
	if err != nil || v3.Generation != 3 || v3.Spec.CPUs != 2 || v3.Spec.MemoryMiB != 1024 {
		t.Fatalf("update after restart = %+v, %v", v3, err)
	}
}
