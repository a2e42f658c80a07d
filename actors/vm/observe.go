package vm

import (
	"context"
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
func (b *behaviour) planPlace(cur *messages.VM, m messages.PlaceVM) plan {
	if cur.Status.ActiveTask == "" || cur.Status.ActiveTask != m.TaskID {
		return refuse(errNotActiveTask(m.TaskID))
	}
	if err := messages.ValidateName("node", m.Node); err != nil {
		return refuse(err)
	}
	if cur.Status.Node == m.Node {
		return plan{} // placed already (a redelivered job)
	}
	if cur.Status.Node != "" {
		return refuse(messages.Errorf(messages.KindConflict, "vm_placed",
			"vm %s is placed on node %s already", cur.Name, cur.Status.Node))
	}
	next := snapshot(cur)
	next.Status.Node = m.Node
	next.Status.Phase = messages.PhaseCreating
	next.Status.Message = "placed on node " + m.Node
	next.UpdatedAt = b.deps.Store.Now().UTC()
	// The node's allocation document takes the VM in the same transaction,
	// judged against the node's capacity and guarded by the document's
	// revision: a placement that lost the node's last room to another is
	// refused with insufficient_capacity, and the job plans again.
	before := cur
	commit := func(c context.Context, st *store.Store) error {
		return st.WithAllocations(c, before, next, b.deps.Admit, func(charge store.Charge) error {
			t := store.NewTxn()
			store.RequireClaim(t, clientv3.LeaseID(m.Lease), m.JobID)
			t.Update(store.VMs, next)
			charge(t)
			return st.Commit(c, t)
		})
	}
	return b.writing(commit, next, nil)
}

// planObserve merges a node's observation of the VM. A VM with a task in
// progress is left to the task (its outcome is written when it ends), and an
// observation older than the status changes nothing.
func (b *behaviour) planObserve(cur *messages.VM, m messages.ObserveVM) plan {
	o := m.Observed
	was := cur.Status
	if was.Node == "" || was.Node != m.Node || was.ActiveTask != "" || o.Phase == "" {
		return plan{}
	}
	if was.ObservedAt != nil && !o.ObservedAt.After(*was.ObservedAt) {
		return plan{}
	}
	next := snapshot(cur)
	st := &next.Status
	st.Phase, st.Pid, st.ObservedGeneration = o.Phase, o.Pid, o.ObservedGeneration
	st.StartedAt = o.StartedAt
	st.Message = o.Message
	at := o.ObservedAt.UTC()
	st.ObservedAt = &at
	noteInterruption(next, o.Reason, b.deps.Store.Now())
	if sameObservation(was, *st) {
		// Only the observation time moved: not worth a write per heartbeat.
		return plan{}
	}
	now := b.deps.Store.Now().UTC()
	next.UpdatedAt = now
	t := store.NewTxn().Update(store.VMs, next)
	store.AddEvents(t, messages.VMTransition(cur, next, now))
	return change(t, next, nil)
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
func (b *behaviour) planUnknown(cur *messages.VM, m messages.MarkVMUnknown) plan {
	if cur.Status.Node == "" || cur.Status.Node != m.Node || cur.Status.Phase == messages.PhaseUnknown {
		return plan{}
	}
	next := snapshot(cur)
	next.Status.Phase = messages.PhaseUnknown
	next.Status.Pid = 0
	next.Status.Message = m.Message
	next.UpdatedAt = b.deps.Store.Now().UTC()
	return change(store.NewTxn().Update(store.VMs, next), next, nil)
}
