//go:build etcd

package vm_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

// rowRevision is the mod revision of a row, or 0 when it is gone.
func (h *harness) rowRevision(resource, id string) int64 {
	h.t.Helper()
	resp, err := h.st.Client().Get(h.t.Context(), store.RowKey(resource, id))
	if err != nil {
		h.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].ModRevision
}

// expectEvent checks the one new event: its type, reason and object, and
// that it was written at rev, the revision of the change it records.
func expectEvent(t *testing.T, e *messages.Event, typ, reason string, rev int64) {
	t.Helper()
	if e.Type != typ || e.Reason != reason || e.Revision != rev {
		t.Fatalf("event %s/%s at revision %d, want %s/%s at %d (%+v)", e.Type, e.Reason, e.Revision, typ, reason, rev, e)
	}
}

// claimFinish claims the job of task and finishes it through the VM's
// actor, as a job's attempt does, with the task ending in state.
func (h *harness) claimFinish(id string, task *messages.Task, state string, status *messages.VMStatus, power string, del bool) messages.VMReply {
	h.t.Helper()
	ctx := h.t.Context()
	d, err := h.st.NewDispatcher(ctx, "r1", 10*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = d.Close() })
	j, err := h.st.GetJob(ctx, task.JobID)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := d.Claim(ctx, j); err != nil {
		h.t.Fatal(err)
	}
	cur, err := h.st.GetTask(ctx, task.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	now := time.Now().UTC()
	cur.State, cur.FinishedAt, cur.UpdatedAt = state, &now, now
	if state == messages.TaskFailed {
		cur.Error = &messages.TaskError{Code: "image_fetch_failed", Message: "the image could not be fetched"}
	}
	r := h.ask(id, messages.FinishVMJob{Job: j, Task: cur, Lease: int64(d.Lease()), Status: status, Power: power, Delete: del})
	if r.Err != nil {
		h.t.Fatalf("finish %s: %v", task.Kind, r.Err)
	}
	return r
}

// TestEventsInTheTransactionOfTheChange: each lifecycle transition a VM's
// actor commits writes exactly one event, in the same etcd transaction as
// the change (the event's mod revision is the row's), and changes that are
// not transitions write none.
func TestEventsInTheTransactionOfTheChange(t *testing.T) {
	h := start(t)
	seen := 0
	id := messages.NewID()
	r := h.ask(id, messages.CreateVM{Owner: "u1", Name: "ev", Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	e := storetest.NewEvents(t, h.st, &seen, 1)[0]
	expectEvent(t, e, messages.EventVMCreated, messages.ReasonUserOperation, h.rowRevision(store.VMs, id))
	if e.Owner != "u1" || e.Object != (messages.EventObject{Kind: "vm", ID: id, Name: "ev"}) || e.Severity != messages.SeverityNormal {
		t.Fatalf("created event %+v", e)
	}

	// The create's job ends with the VM running: started, with the task.
	running := &messages.VMStatus{Phase: messages.PhaseRunning, Node: "n1", ObservedGeneration: 1}
	h.claimFinish(id, r.Task, messages.TaskSuccess, running, "", false)
	e = storetest.NewEvents(t, h.st, &seen, 1)[0]
	expectEvent(t, e, messages.EventVMStarted, messages.ReasonUserOperation, h.rowRevision(store.VMs, id))
	if e.Revision != h.rowRevision(store.Tasks, r.Task.ID) {
		t.Fatalf("started event at %d, the task's outcome at %d", e.Revision, h.rowRevision(store.Tasks, r.Task.ID))
	}

	// A user's stop.
	r = h.ask(id, messages.RequestVMTask{Kind: messages.TaskVMStop})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	storetest.NewEvents(t, h.st, &seen, 0) // asking is not the transition
	h.claimFinish(id, r.Task, messages.TaskSuccess, &messages.VMStatus{Phase: messages.PhaseStopped, Node: "n1", ObservedGeneration: 2}, "", false)
	expectEvent(t, storetest.NewEvents(t, h.st, &seen, 1)[0], messages.EventVMStopped, messages.ReasonUserOperation, h.rowRevision(store.VMs, id))

	// A start whose task fails: the failed task is the event, the VM did
	// not change phase.
	r = h.ask(id, messages.RequestVMTask{Kind: messages.TaskVMStart})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	h.claimFinish(id, r.Task, messages.TaskFailed, nil, "", false)
	e = storetest.NewEvents(t, h.st, &seen, 1)[0]
	expectEvent(t, e, messages.EventTaskFailed, "image_fetch_failed", h.rowRevision(store.Tasks, r.Task.ID))
	if e.Object.Kind != "task" || e.Object.ID != r.Task.ID || e.Object.Name != "ev" || e.Owner != "u1" || e.Severity != messages.SeverityWarning {
		t.Fatalf("task failed event %+v", e)
	}

	// Deleted: the event is written with the row's removal.
	r = h.ask(id, messages.RequestVMTask{Kind: messages.TaskVMDelete})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	task := r.Task
	h.claimFinish(id, task, messages.TaskSuccess, nil, "", true)
	e = storetest.NewEvents(t, h.st, &seen, 1)[0]
	expectEvent(t, e, messages.EventVMDeleted, messages.ReasonUserOperation, h.rowRevision(store.Tasks, task.ID))
	if h.rowRevision(store.VMs, id) != 0 {
		t.Fatal("the vm row is still there")
	}
}

// TestEventsOfObservedTransitions: what the guest or QEMU does on its own,
// as the node reports it, is recorded with the reason the node gave; a
// repeated observation records nothing.
func TestEventsOfObservedTransitions(t *testing.T) {
	h := start(t)
	seen := 0
	for _, tt := range []struct {
		name, phase, reason string
		typ, evReason       string
	}{
		{"guest-off", messages.PhaseStopped, messages.ReasonGuestShutdown, messages.EventVMStopped, messages.ReasonGuestShutdown},
		{"panicked", messages.PhaseCrashed, messages.ReasonGuestPanicked, messages.EventVMCrashed, messages.ReasonGuestPanicked},
		{"killed", messages.PhaseStopped, messages.ReasonQEMUExited, messages.EventVMCrashed, messages.ReasonQEMUExited},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vm := h.placedVM(tt.name)
			seen = len(storetest.Events(t, h.st))
			got := h.observe(vm.ID, tt.phase, tt.reason, "it happened")
			e := storetest.NewEvents(t, h.st, &seen, 1)[0]
			expectEvent(t, e, tt.typ, tt.evReason, got.Revision)
			if e.Object.ID != vm.ID || e.Owner != vm.Owner {
				t.Fatalf("event %+v", e)
			}
			h.observe(vm.ID, tt.phase, tt.reason, "it happened")
			storetest.NewEvents(t, h.st, &seen, 0)
			// Running again, behind the control plane's back (no task).
			got = h.observe(vm.ID, messages.PhaseRunning, "", "")
			expectEvent(t, storetest.NewEvents(t, h.st, &seen, 1)[0], messages.EventVMStarted, messages.ReasonObserved, got.Revision)
		})
	}
	// A pause and its resume, and a guest's own reboot, are no lifecycle
	// events.
	vm := h.placedVM("calm")
	seen = len(storetest.Events(t, h.st))
	h.observe(vm.ID, messages.PhasePaused, "", "")
	h.observe(vm.ID, messages.PhaseRunning, "", "")
	h.observe(vm.ID, messages.PhaseRunning, messages.ReasonGuestReset, "the guest rebooted itself")
	storetest.NewEvents(t, h.st, &seen, 0)
}
