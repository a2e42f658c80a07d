package messages

import (
	"testing"
	"time"
)

// TestVMTransition: which phase changes are lifecycle events, with which
// type and reason.
func TestVMTransition(t *testing.T) {
	now := time.Now()
	vm := func(phase, task string, cond string) *VM {
		v := &VM{ID: "id", Name: "web", Owner: "u", Status: VMStatus{Phase: phase, Node: "n1", ActiveTask: task}}
		if cond != "" {
			v.Status.Conditions = []Condition{{Type: VMConditionInterrupted, Status: ConditionTrue, Reason: cond}}
		}
		return v
	}
	for _, tc := range []struct {
		name       string
		prev, next *VM
		typ, why   string
	}{
		{"create", nil, vm(PhasePending, "t", ""), EventVMCreated, ReasonUserOperation},
		{"delete", vm(PhaseStopped, "t", ""), nil, EventVMDeleted, ReasonUserOperation},
		{"created running", vm(PhaseCreating, "t", ""), vm(PhaseRunning, "", ""), EventVMStarted, ReasonUserOperation},
		{"started", vm(PhaseStopped, "t", ""), vm(PhaseRunning, "", ""), EventVMStarted, ReasonUserOperation},
		{"started behind our back", vm(PhaseStopped, "", ""), vm(PhaseRunning, "", ""), EventVMStarted, ReasonObserved},
		{"restarted after a crash", vm(PhaseCrashed, "t", ""), vm(PhaseRunning, "", ""), EventVMStarted, ReasonUserOperation},
		{"stopped", vm(PhaseRunning, "t", ""), vm(PhaseStopped, "", ""), EventVMStopped, ReasonUserOperation},
		{"stopped while paused", vm(PhasePaused, "t", ""), vm(PhaseStopped, "", ""), EventVMStopped, ReasonUserOperation},
		{"guest off", vm(PhaseRunning, "", ""), vm(PhaseStopped, "", ReasonGuestShutdown), EventVMStopped, ReasonGuestShutdown},
		{"panic", vm(PhaseRunning, "", ""), vm(PhaseCrashed, "", ReasonGuestPanicked), EventVMCrashed, ReasonGuestPanicked},
		{"qemu killed", vm(PhaseRunning, "", ""), vm(PhaseStopped, "", ReasonQEMUExited), EventVMCrashed, ReasonQEMUExited},
		{"qemu died while the node was away", vm(PhaseUnknown, "", ""), vm(PhaseStopped, "", ReasonQEMUExited), EventVMCrashed, ReasonQEMUExited},
		{"resumed", vm(PhasePaused, "", ""), vm(PhaseRunning, "", ""), "", ""},
		{"paused", vm(PhaseRunning, "", ""), vm(PhasePaused, "", ""), "", ""},
		{"paused on a full disk", vm(PhaseRunning, "", ""), vm(PhasePaused, "", ReasonIOError), "", ""},
		{"node back", vm(PhaseUnknown, "", ""), vm(PhaseRunning, "", ""), "", ""},
		{"node lost", vm(PhaseRunning, "", ""), vm(PhaseUnknown, "", ""), "", ""},
		{"created stopped", vm(PhaseCreating, "t", ""), vm(PhaseStopped, "", ""), "", ""},
		{"create failed", vm(PhaseCreating, "t", ""), vm(PhaseFailed, "", ""), "", ""},
		{"same phase", vm(PhaseRunning, "", ""), vm(PhaseRunning, "", ReasonGuestReset), "", ""},
	} {
		e := VMTransition(tc.prev, tc.next, now)
		switch {
		case tc.typ == "" && e != nil:
			t.Errorf("%s: event %s/%s, want none", tc.name, e.Type, e.Reason)
		case tc.typ != "" && (e == nil || e.Type != tc.typ || e.Reason != tc.why):
			t.Errorf("%s: event %+v, want %s/%s", tc.name, e, tc.typ, tc.why)
		case e != nil && (e.Object != EventObject{Kind: "vm", ID: "id", Name: "web"} || e.Owner != "u" || !ValidID(e.ID)):
			t.Errorf("%s: event %+v", tc.name, e)
		}
	}
}

// TestEventTypeFilter: a filter is an object kind or an exact type.
func TestEventTypeFilter(t *testing.T) {
	e := NewEvent(EventVMStarted, ReasonUserOperation, EventObject{Kind: "vm"}, "", "", time.Now())
	for f, want := range map[string]bool{"": true, "vm": true, "vm.started": true, "vm.stopped": false, "node": false} {
		if e.MatchesType(f) != want {
			t.Errorf("MatchesType(%q) = %v", f, !want)
		}
	}
	for f, want := range map[string]bool{"vm": true, "task.failed": true, "vms": false, "vm.": false, "": false} {
		if ValidEventTypeFilter(f) != want {
			t.Errorf("ValidEventTypeFilter(%q) = %v", f, !want)
		}
	}
	if TaskFailedEvent(&Task{State: TaskSuccess}, time.Now()) != nil {
		t.Error("a successful task is an event")
	}
}
