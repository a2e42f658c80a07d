package vm

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// The VM's actor is the one writer of its tasks' rows: it creates a task
// with the VM change that starts it, cancels it, and ends it with the VM's
// outcome, each in the transaction that changes the VM. A job's attempt
// works through it too, so the task it reads and the progress it writes are
// serialized with every other change to the VM and its task.

// planJobView answers an attempt's start: the VM as this actor holds it (nil
// when gone) and the job's task, read off the actor.
func (b *behaviour) planJobView(cur *messages.VM, m messages.GetVMJob) plan {
	st := b.deps.Store
	return plan{Write: func(c context.Context) (plan, error) {
		task, err := st.GetTask(c, m.TaskID)
		// A task that cannot be read changes nothing here: answered, not
		// failed, so the VM is not read again for it.
		return plan{Reply: messages.VMReply{VM: cur, Task: task, Err: err}}, nil
	}}
}

// planProgress writes a running job's progress into its task while the
// job's claim holds.
func (b *behaviour) planProgress(m messages.ProgressVMJob) plan {
	task := *m.Task
	t := store.ProgressTask(store.NewTxn(), clientv3.LeaseID(m.Lease), m.Job.ID, &task)
	return plan{Txn: t, Reply: messages.VMReply{Task: &task}}
}

// planRetry releases a job for a later attempt with its task, pending again,
// in one transaction.
func (b *behaviour) planRetry(m messages.RetryVMJob) plan {
	next := *m.Job
	next.LastError, next.NotBefore = m.Cause, m.NotBefore
	t := store.ReleaseJob(store.NewTxn(), clientv3.LeaseID(m.Lease), &next)
	var task *messages.Task
	if m.Task != nil {
		c := *m.Task
		task = &c
		t.Update(store.Tasks, task)
	}
	return plan{Txn: t, Reply: messages.VMReply{Task: task}}
}
