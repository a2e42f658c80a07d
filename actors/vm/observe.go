package vm

import (
	"reflect"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// errNotActiveTask refuses a placement by a job that no longer runs the VM's
// task (cancelled, finished, or replaced).
func errNotActiveTask(taskID string) *messages.Error {
	return messages.Errorf(messages.KindConflict, "task_not_active",
		"task %s is not the vm's task in progress", taskID)
}

// planPlace records the node a job placed the VM on, before the agent is
// asked to create it, in one transaction guarded by the job's claim.
func (a *vmActor) planPlace(m messages.PlaceVM) (plan, error) {
	if a.vm.Status.ActiveTask == "" || a.vm.Status.ActiveTask != m.TaskID {
		return plan{}, errNotActiveTask(m.TaskID)
	}
	if err := messages.ValidateName("node", m.Node); err != nil {
		return plan{}, err
	}
	if a.vm.Status.Node == m.Node {
		return plan{}, nil // placed already (a redelivered job)
	}
	if a.vm.Status.Node != "" {
		return plan{}, messages.Errorf(messages.KindConflict, "vm_placed",
			"vm %s is placed on node %s already", a.vm.Name, a.vm.Status.Node)
	}
	next := a.snapshot()
	next.Status.Node = m.Node
	next.Status.Phase = messages.PhaseCreating
	next.Status.Message = "placed on node " + m.Node
	next.UpdatedAt = a.deps.Store.Now().UTC()
	t := store.NewTxn()
	store.RequireClaim(t, clientv3.LeaseID(m.Lease), m.JobID)
	t.Update(store.VMs, next)
	return plan{txn: t, next: next}, nil
}

// planObserve merges a node's observation of the VM. A VM with a task in
// progress is left to the task (its outcome is written when it ends), and an
// observation older than the status changes nothing.
func (a *vmActor) planObserve(m messages.ObserveVM) (plan, error) {
	o := m.Observed
	cur := a.vm.Status
	if cur.Node == "" || cur.Node != m.Node || cur.ActiveTask != "" || o.Phase == "" {
		return plan{}, nil
	}
	if cur.ObservedAt != nil && !o.ObservedAt.After(*cur.ObservedAt) {
		return plan{}, nil
	}
	next := a.snapshot()
	st := &next.Status
	st.Phase, st.Pid, st.ObservedGeneration = o.Phase, o.Pid, o.ObservedGeneration
	st.StartedAt = o.StartedAt
	st.Message = o.Message
	at := o.ObservedAt.UTC()
	st.ObservedAt = &at
	noteInterruption(next, o.Reason, a.deps.Store.Now())
	if sameObservation(cur, *st) {
		// Only the observation time moved: not worth a write per heartbeat.
		return plan{}, nil
	}
	next.UpdatedAt = a.deps.Store.Now().UTC()
	return plan{txn: store.NewTxn().Update(store.VMs, next), next: next}, nil
}

// sameObservation reports whether two statuses differ in nothing but the
// observation time.
func sameObservation(a, b messages.VMStatus) bool {
	a.ObservedAt, b.ObservedAt = nil, nil
	if a.StartedAt != nil && b.StartedAt != nil && a.StartedAt.Equal(*b.StartedAt) {
		a.StartedAt, b.StartedAt = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// planUnknown marks a VM whose node is gone: nothing is known of it and
// nothing is done to it until the node returns.
func (a *vmActor) planUnknown(m messages.MarkVMUnknown) (plan, error) {
	if a.vm.Status.Node == "" || a.vm.Status.Node != m.Node || a.vm.Status.Phase == messages.PhaseUnknown {
		return plan{}, nil
	}
	next := a.snapshot()
	next.Status.Phase = messages.PhaseUnknown
	next.Status.Pid = 0
	next.Status.Message = m.Message
	next.UpdatedAt = a.deps.Store.Now().UTC()
	return plan{txn: store.NewTxn().Update(store.VMs, next), next: next}, nil
}
