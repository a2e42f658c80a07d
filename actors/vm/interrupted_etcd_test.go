//go:build etcd

package vm_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// placedVM writes a VM running on node n1 with no task in progress, as a
// finished create leaves it.
func (h *harness) placedVM(name string) *messages.VM {
	h.t.Helper()
	now := time.Now().UTC()
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}}
	spec.Defaults()
	vm := &messages.VM{ID: messages.NewID(), Name: name, Owner: "u", Generation: 1, Spec: spec,
		Status:    messages.VMStatus{Phase: messages.PhaseRunning, Node: "n1", ObservedGeneration: 1},
		CreatedAt: now, UpdatedAt: now}
	if err := h.st.Commit(h.t.Context(), store.CreateVM(store.NewTxn(), vm)); err != nil {
		h.t.Fatal(err)
	}
	return vm
}

func (h *harness) observe(id, phase, reason, msg string) *messages.VM {
	h.t.Helper()
	r := h.ask(id, messages.ObserveVM{Node: "n1", Observed: messages.VMObserved{ID: id, Phase: phase, Reason: reason,
		Message: msg, ObservedGeneration: 1, ObservedAt: time.Now().UTC()}})
	if r.Err != nil {
		h.t.Fatalf("observe %s/%s: %v", phase, reason, r.Err)
	}
	stored, err := h.st.GetVM(h.t.Context(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return stored
}

func interrupted(vm *messages.VM) *messages.Condition {
	return messages.FindCondition(vm.Status.Conditions, messages.VMConditionInterrupted)
}

// TestGuestPoweroffStopsTheSpec: a guest that powered itself off leaves the
// VM stopped with the Interrupted condition saying why, and its power state
// stopped, so that nothing starts it again against the user's will.
func TestGuestPoweroffStopsTheSpec(t *testing.T) {
	h := start(t)
	vm := h.placedVM("off")
	got := h.observe(vm.ID, messages.PhaseStopped, messages.ReasonGuestShutdown, "the guest powered itself off")
	c := interrupted(got)
	if got.Status.Phase != messages.PhaseStopped || got.Status.Message != "the guest powered itself off" ||
		c == nil || c.Status != messages.ConditionTrue || c.Reason != messages.ReasonGuestShutdown {
		t.Fatalf("after the guest's poweroff: status %+v", got.Status)
	}
	if got.Spec.PowerState != messages.PowerStopped || got.Generation != 2 {
		t.Fatalf("spec power %q generation %d; want stopped, 2", got.Spec.PowerState, got.Generation)
	}
	// The same observation in the next heartbeat writes nothing.
	rev := got.Revision
	if again := h.observe(vm.ID, messages.PhaseStopped, messages.ReasonGuestShutdown, "the guest powered itself off"); again.Revision != rev {
		t.Fatalf("a repeated observation was written again (revision %d → %d)", rev, again.Revision)
	}
}

// TestCrashAndIOErrorKeepThePowerState: a panic or a full disk is nobody's
// intent: the condition says why, the spec keeps power running, and the
// condition turns False once the VM runs again.
func TestCrashAndIOErrorKeepThePowerState(t *testing.T) {
	h := start(t)
	for _, tt := range []struct{ phase, reason, msg string }{
		{messages.PhaseCrashed, messages.ReasonGuestPanicked, "the guest kernel panicked"},
		{messages.PhasePaused, messages.ReasonIOError, "paused: I/O error on disk vda: No space left on device"},
	} {
		t.Run(tt.reason, func(t *testing.T) {
			vm := h.placedVM("v-" + tt.phase)
			got := h.observe(vm.ID, tt.phase, tt.reason, tt.msg)
			c := interrupted(got)
			if got.Status.Phase != tt.phase || got.Status.Message != tt.msg || c == nil ||
				c.Status != messages.ConditionTrue || c.Reason != tt.reason || c.Message != tt.msg {
				t.Fatalf("status %+v", got.Status)
			}
			if got.Spec.PowerState != messages.PowerRunning || got.Generation != 1 {
				t.Fatalf("spec power %q generation %d; want running, 1", got.Spec.PowerState, got.Generation)
			}
			got = h.observe(vm.ID, messages.PhaseRunning, "", "")
			c = interrupted(got)
			if c == nil || c.Status != messages.ConditionFalse || c.Reason != messages.ReasonRunning || got.Status.Message != "" {
				t.Fatalf("running again: status %+v", got.Status)
			}
		})
	}
}

// TestNoConditionWithoutInterruption: a VM that was never interrupted has
// no Interrupted condition, and a guest's reboot is noted without one that
// is True.
func TestNoConditionWithoutInterruption(t *testing.T) {
	h := start(t)
	vm := h.placedVM("calm")
	got := h.observe(vm.ID, messages.PhasePaused, "", "")
	if c := interrupted(got); c != nil {
		t.Fatalf("a user's pause made condition %+v", c)
	}
	got = h.observe(vm.ID, messages.PhaseRunning, messages.ReasonGuestReset, "the guest rebooted itself")
	if c := interrupted(got); c == nil || c.Status != messages.ConditionFalse || c.Reason != messages.ReasonGuestReset {
		t.Fatalf("after the guest's reset: %+v", got.Status)
	}
}
