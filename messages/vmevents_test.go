package messages

import (
	"testing"
	"time"
)

func TestVMInterruptedCondition(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	trueShut := Condition{Type: VMConditionInterrupted, Status: ConditionTrue, Reason: ReasonGuestShutdown, Message: "off", LastTransitionTime: t0}
	for _, tt := range []struct {
		name                string
		phase, reason, msg  string
		prev                *Condition
		wantOK              bool
		wantStatus, wantWhy string
		wantTransition      time.Time
	}{
		{"never interrupted", PhaseRunning, "", "", nil, false, "", "", time.Time{}},
		{"a user's stop, never interrupted", PhaseStopped, "", "", nil, false, "", "", time.Time{}},
		{"guest powered off", PhaseStopped, ReasonGuestShutdown, "off", nil, true, ConditionTrue, ReasonGuestShutdown, t1},
		{"still off: transition kept", PhaseStopped, ReasonGuestShutdown, "off", &trueShut, true, ConditionTrue, ReasonGuestShutdown, t0},
		{"running again", PhaseRunning, "", "", &trueShut, true, ConditionFalse, ReasonRunning, t1},
		{"stopped by the user after", PhaseStopped, "", "", &trueShut, true, ConditionFalse, ReasonUserOperation, t1},
		{"guest reset is not an interruption", PhaseRunning, ReasonGuestReset, "rebooted", nil, true, ConditionFalse, ReasonGuestReset, t1},
		{"io error", PhasePaused, ReasonIOError, "full", nil, true, ConditionTrue, ReasonIOError, t1},
		{"an unknown reason is none", PhaseStopped, "Whatever", "x", nil, false, "", "", time.Time{}},
		{"panic", PhaseCrashed, ReasonGuestPanicked, "panic", nil, true, ConditionTrue, ReasonGuestPanicked, t1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := VMInterruptedCondition(tt.phase, tt.reason, tt.msg, tt.prev, t1)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tt.wantOK, c)
			}
			if !ok {
				return
			}
			if c.Type != VMConditionInterrupted || c.Status != tt.wantStatus || c.Reason != tt.wantWhy || !c.LastTransitionTime.Equal(tt.wantTransition) {
				t.Fatalf("got %+v; want status %s reason %s since %s", c, tt.wantStatus, tt.wantWhy, tt.wantTransition)
			}
		})
	}
}
