//go:build etcd

package vm_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/actors/vm"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

type harness struct {
	t   *testing.T
	st  *store.Store
	rt  *system.Runtime
	vms *actor.PID
}

func start(t *testing.T) *harness {
	t.Helper()
	st := storetest.New(t)
	log := slog.New(slog.DiscardHandler)
	rt := system.NewRuntime(log)
	t.Cleanup(rt.Stop)
	deps := vm.Deps{Runtime: rt, Store: st, Log: log, PassivateAfter: time.Minute}
	pid, err := rt.System.Root.SpawnNamed(system.NewGuardian(rt, "vm", func(id string) *actor.Props { return vm.Props(deps, id) }, nil), "vms")
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, st: st, rt: rt, vms: pid}
}

func (h *harness) ask(id string, msg any) messages.VMReply {
	h.t.Helper()
	res, err := h.rt.System.Root.RequestFuture(h.vms, system.Deliver{ID: id, Msg: msg}, 5*time.Second).Result()
	if err != nil {
		h.t.Fatalf("ask %T: %v", msg, err)
	}
	return res.(messages.VMReply)
}

// TestPlaceObserveUnknown drives one VM actor with the placement, observation
// and node-loss commands and checks each rule that guards them.
func TestPlaceObserveUnknown(t *testing.T) {
	h := start(t)
	id := messages.NewID()
	r := h.ask(id, messages.CreateVM{Owner: "u", Name: "w", Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	task := r.Task
	// Refused: not the active task.
	if r := h.ask(id, messages.PlaceVM{JobID: task.JobID, TaskID: "other", Node: "n1"}); messages.KindOf(r.Err) != messages.KindConflict {
		t.Fatalf("place by another task: %v", r.Err)
	}
	// Refused: the job is not claimed under that lease.
	if r := h.ask(id, messages.PlaceVM{JobID: task.JobID, TaskID: task.ID, Lease: 12345, Node: "n1"}); r.Err == nil {
		t.Fatal("place without the claim was accepted")
	}
	// An observation while the create runs is left to the task.
	now := time.Now().UTC()
	if r := h.ask(id, messages.ObserveVM{Node: "n1", Observed: messages.VMObserved{ID: id, Phase: messages.PhaseRunning, ObservedAt: now}}); r.Err != nil || r.VM.Status.Phase != messages.PhasePending {
		t.Fatalf("observe unplaced vm: %+v %v", r.VM, r.Err)
	}
	// Cancel the create: the VM is stopped, unplaced, without a task.
	if r := h.ask(id, messages.CancelVMTask{TaskID: task.ID}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := h.ask(id, messages.MarkVMUnknown{Node: "n1", Message: "gone"}); r.Err != nil || r.VM.Status.Phase != messages.PhaseStopped {
		t.Fatalf("unknown on an unplaced vm: %+v %v", r.VM, r.Err)
	}
	// Option checks.
	if r := h.ask(id, messages.RequestVMTask{Kind: messages.TaskVMStop, TimeoutSeconds: -1}); messages.KindOf(r.Err) != messages.KindInvalid {
		t.Fatalf("negative timeout: %v", r.Err)
	}
	r = h.ask(id, messages.RequestVMTask{Kind: messages.TaskVMPoweroff, Force: true, TimeoutSeconds: 5})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	resp, err := h.st.Client().Get(t.Context(), store.RowKey(store.Jobs, r.Task.JobID))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("job row: %v", err)
	}
	if s := string(resp.Kvs[0].Value); !contains(s, `"force":true`) || !contains(s, `"timeout_seconds":5`) {
		t.Fatalf("job row lacks the options: %s", s)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestUpdateAfterAnotherWriter: an update whose write finds the row changed
// by another writer (the VM's actor on another replica) is planned again
// against the row as it is; one that names the revision it read is still
// refused as stale.
func TestUpdateAfterAnotherWriter(t *testing.T) {
	h := start(t)
	id := messages.NewID()
	r := h.ask(id, messages.CreateVM{Owner: "u", Name: "w", Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	read := r.VM.Revision
	row, err := h.st.GetVM(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	row.Status.Message = "written elsewhere"
	if err := h.st.Commit(t.Context(), store.NewTxn().Update(store.VMs, row)); err != nil {
		t.Fatal(err)
	}
	two := 2
	u := h.ask(id, messages.UpdateVM{Patch: messages.VMSpecPatch{CPUs: &two}})
	if u.Err != nil || u.VM.Spec.CPUs != 2 || u.VM.Status.Message != "written elsewhere" {
		t.Fatalf("update after another writer: %+v %v", u.VM, u.Err)
	}
	three := 3
	if s := h.ask(id, messages.UpdateVM{Patch: messages.VMSpecPatch{CPUs: &three}, Revision: read}); messages.KindOf(s.Err) != messages.KindStale {
		t.Fatalf("update at a stale revision: %v", s.Err)
	}
	if got, err := h.st.GetVM(t.Context(), id); err != nil || got.Spec.CPUs != 2 || got.Status.Message != "written elsewhere" {
		t.Fatalf("row: %+v %v", got, err)
	}
}
