package messages

import "time"

// VM condition types and reasons. The agent reports a reason with a VM whose
// phase the guest or QEMU changed on its own (VMObserved.Reason); the
// control plane turns it into the VM's Interrupted condition. These strings
// are a public contract, like the node's.
const (
	// VMConditionInterrupted is True while the VM is stopped, paused or
	// crashed by something other than an operation a user asked for: the
	// guest powered itself off, panicked, or QEMU paused it on a disk
	// error. It turns False once the VM runs again or a user's operation
	// changes its phase.
	VMConditionInterrupted = "Interrupted"
	// ReasonGuestShutdown: the guest powered itself off (poweroff inside
	// the guest). The control plane records power_state stopped.
	ReasonGuestShutdown = "GuestShutdown"
	// ReasonGuestPanicked: the guest kernel panicked (reported by the
	// pvpanic device) and QEMU ended it; the panic is in the serial log.
	ReasonGuestPanicked = "GuestPanicked"
	// ReasonGuestReset: the guest rebooted itself; it keeps running.
	ReasonGuestReset = "GuestReset"
	// ReasonIOError: QEMU paused the guest because a disk write failed for
	// lack of space on the node; resume it once space is freed.
	ReasonIOError = "IOError"
	// ReasonQEMUExited: QEMU ended without the guest powering off (killed,
	// or crashed itself).
	ReasonQEMUExited = "QEMUExited"
	// ReasonRunning: the condition's False state once the VM runs again.
	ReasonRunning = "Running"
	// ReasonUserOperation: the condition's False state after an operation
	// a user asked for (start, stop, resume, …) set the phase.
	ReasonUserOperation = "UserOperation"
)

// Interrupting reports whether reason ends or suspends the guest's run, as
// opposed to one it survives (a reset).
func Interrupting(reason string) bool {
	switch reason {
	case ReasonGuestShutdown, ReasonGuestPanicked, ReasonIOError, ReasonQEMUExited:
		return true
	}
	return false
}

// VMInterruptedCondition is the VM's Interrupted condition after an
// observation with phase, reason and message; prev is the VM's current
// condition of that type, if any (its transition time is kept while the
// status holds). ok is false when there is nothing to say: no reason now
// and no condition before.
func VMInterruptedCondition(phase, reason, message string, prev *Condition, now time.Time) (c Condition, ok bool) {
	if !Interrupting(reason) && reason != ReasonGuestReset {
		reason = "" // not one an agent sends: the condition says nothing of it
	}
	c = Condition{Type: VMConditionInterrupted, Status: ConditionFalse}
	switch {
	case reason != "" && Interrupting(reason) && phase != PhaseRunning:
		c.Status, c.Reason, c.Message = ConditionTrue, reason, message
	case reason != "":
		c.Reason, c.Message = reason, message
	case prev == nil:
		return Condition{}, false
	case phase == PhaseRunning:
		c.Reason = ReasonRunning
	default:
		c.Reason = ReasonUserOperation
	}
	c.LastTransitionTime = now.UTC()
	if prev != nil && prev.Status == c.Status {
		c.LastTransitionTime = prev.LastTransitionTime
	}
	return c, true
}

// SetCondition replaces the condition of c's type in conds, or appends it.
func SetCondition(conds []Condition, c Condition) []Condition {
	out := make([]Condition, 0, len(conds)+1)
	found := false
	for _, x := range conds {
		if x.Type == c.Type {
			out = append(out, c)
			found = true
			continue
		}
		out = append(out, x)
	}
	if !found {
		out = append(out, c)
	}
	return out
}

// FindCondition returns the condition of type typ in conds, or nil.
func FindCondition(conds []Condition, typ string) *Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}
