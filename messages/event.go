package messages

import (
	"strings"
	"time"
)

// Lifecycle event types, named <object kind>.<what happened>. They are a
// public contract (GET /v1/events, the watch stream's events type, otherix
// events): never rename one.
const (
	EventVMCreated = "vm.created"
	EventVMStarted = "vm.started"
	// EventVMStopped: a user's stop or poweroff, or the guest's own
	// power-off (reason GuestShutdown).
	EventVMStopped = "vm.stopped"
	// EventVMCrashed: the guest panicked (GuestPanicked) or QEMU ended
	// without the guest powering off (QEMUExited).
	EventVMCrashed = "vm.crashed"
	EventVMDeleted = "vm.deleted"
	// EventVMMigrated: the VM moved to another node (written by migration).
	EventVMMigrated = "vm.migrated"

	EventNodeReady       = "node.ready"
	EventNodeUnreachable = "node.unreachable"
	EventNodeGone        = "node.gone"

	EventTaskFailed = "task.failed"
)

// Event object kinds: the resource an event is about.
const (
	EventObjectVM   = "vm"
	EventObjectNode = "node"
	EventObjectTask = "task"
)

// Event severities.
const (
	SeverityNormal  = "normal"
	SeverityWarning = "warning"
)

// Event reasons beyond the VM condition reasons (ReasonGuestShutdown,
// ReasonGuestPanicked, ReasonQEMUExited, ReasonUserOperation).
const (
	// ReasonHeartbeat: a node's heartbeat made it ready.
	ReasonHeartbeat = "Heartbeat"
	// ReasonHeartbeatMissed: the liveness loop demoted a silent node.
	ReasonHeartbeatMissed = "HeartbeatMissed"
	// ReasonObserved: the node reported the VM's new phase outside any
	// operation (it was started, or stopped, behind the control plane).
	ReasonObserved = "Observed"
)

// Event is one meaningful transition, written in the same etcd transaction
// as the change it records, so its revision is the change's revision.
type Event struct {
	// ID is a ULID: events are keyed /otherix/events/<id>, so key order is
	// the order their writers minted them (time order up to clock skew
	// between replicas; Revision is the exact order).
	ID       string      `json:"id"`
	Type     string      `json:"type"`
	Reason   string      `json:"reason"`
	Severity string      `json:"severity"`
	Object   EventObject `json:"object"`
	// Owner is the object's owner (VMs and tasks), by which events are
	// filtered for roles that see only their own; empty for nodes.
	Owner   string    `json:"owner,omitempty"`
	Message string    `json:"message,omitempty"`
	Time    time.Time `json:"time"`
	// Revision is the etcd revision of the change (the event key's mod
	// revision); never stored in the row.
	Revision int64 `json:"revision"`
}

// EventObject names what an event is about.
type EventObject struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// EntityID implements the store's entity contract.
func (e *Event) EntityID() string { return e.ID }

// EntityRevision implements the store's entity contract.
func (e *Event) EntityRevision() int64 { return e.Revision }

// SetEntityRevision implements the store's entity contract.
func (e *Event) SetEntityRevision(r int64) { e.Revision = r }

// NewEvent builds an event about an object; severity follows from the type.
func NewEvent(typ, reason string, obj EventObject, owner, message string, now time.Time) *Event {
	sev := SeverityNormal
	switch typ {
	case EventVMCrashed, EventNodeUnreachable, EventNodeGone, EventTaskFailed:
		sev = SeverityWarning
	}
	return &Event{ID: NewID(), Type: typ, Reason: reason, Severity: sev, Object: obj, Owner: owner,
		Message: message, Time: now.UTC()}
}

// EventObjectKind is the object kind an event type is about ("vm" for
// "vm.started").
func EventObjectKind(typ string) string {
	kind, _, _ := strings.Cut(typ, ".")
	return kind
}

// EventKinds are the object kinds events are written for.
var EventKinds = []string{EventObjectVM, EventObjectNode, EventObjectTask}

// EventTypes are every event type, for validation and documentation.
var EventTypes = []string{EventVMCreated, EventVMStarted, EventVMStopped, EventVMCrashed, EventVMDeleted,
	EventVMMigrated, EventNodeReady, EventNodeUnreachable, EventNodeGone, EventTaskFailed}

// ValidEventTypeFilter reports whether f names an object kind ("vm") or an
// event type ("vm.started").
func ValidEventTypeFilter(f string) bool {
	for _, k := range EventKinds {
		if f == k {
			return true
		}
	}
	for _, t := range EventTypes {
		if f == t {
			return true
		}
	}
	return false
}

// MatchesType reports whether e matches a type filter: an object kind or
// an exact event type; "" matches all.
func (e *Event) MatchesType(f string) bool {
	return f == "" || e.Type == f || e.Object.Kind == f
}

// VMEventObject names a VM in an event.
func VMEventObject(vm *VM) EventObject {
	return EventObject{Kind: EventObjectVM, ID: vm.ID, Name: vm.Name}
}

// VMTransition is the event a VM change from prev to next records, or nil.
// prev nil is a create and next nil a delete; otherwise the phase decides:
// entering running from a phase where no guest ran is a start, leaving a
// running or paused guest for stopped is a stop (by the guest when the
// Interrupted condition says GuestShutdown), and a crash is the phase
// crashed or a stop whose condition says QEMU exited. Moves through
// unknown (a silent node) record nothing: the node's events say it.
func VMTransition(prev, next *VM, now time.Time) *Event {
	switch {
	case prev == nil && next == nil:
		return nil
	case prev == nil:
		return NewEvent(EventVMCreated, ReasonUserOperation, VMEventObject(next), next.Owner,
			"vm "+next.Name+" created", now)
	case next == nil:
		return NewEvent(EventVMDeleted, ReasonUserOperation, VMEventObject(prev), prev.Owner,
			"vm "+prev.Name+" deleted", now)
	}
	from, to := prev.Status.Phase, next.Status.Phase
	if from == to {
		return nil
	}
	reason := ReasonUserOperation
	if next.Status.ActiveTask == "" && prev.Status.ActiveTask == "" {
		reason = ReasonObserved
	}
	var cond string
	if c := FindCondition(next.Status.Conditions, VMConditionInterrupted); c != nil && c.Status == ConditionTrue {
		cond = c.Reason
	}
	obj, owner := VMEventObject(next), next.Owner
	on := ""
	if next.Status.Node != "" {
		on = " on node " + next.Status.Node
	}
	switch {
	case to == PhaseCrashed || (to == PhaseStopped && cond == ReasonQEMUExited):
		if cond != "" {
			reason = cond
		}
		msg := next.Status.Message
		if msg == "" {
			msg = "vm " + next.Name + " crashed" + on
		}
		return NewEvent(EventVMCrashed, reason, obj, owner, msg, now)
	case to == PhaseRunning && from != PhasePaused && from != PhaseUnknown:
		return NewEvent(EventVMStarted, reason, obj, owner, "vm "+next.Name+" started"+on, now)
	case to == PhaseStopped && (from == PhaseRunning || from == PhasePaused):
		msg := "vm " + next.Name + " stopped" + on
		if cond == ReasonGuestShutdown {
			reason, msg = ReasonGuestShutdown, "the guest powered itself off"+on
		}
		return NewEvent(EventVMStopped, reason, obj, owner, msg, now)
	}
	return nil
}

// VMMigratedEvent is the event of a VM that moved from node from to its
// current node; migration puts it in the transaction that records the move.
func VMMigratedEvent(vm *VM, from string, now time.Time) *Event {
	return NewEvent(EventVMMigrated, ReasonUserOperation, VMEventObject(vm), vm.Owner,
		"vm "+vm.Name+" moved from node "+from+" to node "+vm.Status.Node, now)
}

// TaskFailedEvent is the event of a task that ended failed, or nil.
func TaskFailedEvent(t *Task, now time.Time) *Event {
	if t == nil || t.State != TaskFailed {
		return nil
	}
	reason, msg := "Failed", t.Message
	if t.Error != nil {
		reason, msg = t.Error.Code, t.Error.Message
	}
	// The object's name is the target's, so that following one VM's events
	// (?object=NAME) shows its failed tasks too.
	name := t.Target.Name
	if name == "" {
		name = t.Target.ID
	}
	return NewEvent(EventTaskFailed, reason, EventObject{Kind: EventObjectTask, ID: t.ID, Name: name},
		t.Owner, t.Kind+" failed: "+msg, now)
}

// NodeTransition is the event of a node moving from phase prev to next's,
// or nil.
func NodeTransition(prev string, next *Node, now time.Time) *Event {
	if prev == next.Phase {
		return nil
	}
	obj := EventObject{Kind: EventObjectNode, ID: next.ID, Name: next.Name}
	switch next.Phase {
	case NodeReady:
		msg := "node " + next.Name + " is ready"
		if prev != "" && prev != NodePending {
			msg += " again (was " + prev + ")"
		}
		return NewEvent(EventNodeReady, ReasonHeartbeat, obj, "", msg, now)
	case NodeUnreachable:
		return NewEvent(EventNodeUnreachable, ReasonHeartbeatMissed, obj, "", next.Status.Message, now)
	case NodeGone:
		return NewEvent(EventNodeGone, ReasonHeartbeatMissed, obj, "", next.Status.Message, now)
	}
	return nil
}
