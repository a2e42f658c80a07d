package vm

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// snapshot copies the VM so a plan never mutates the acknowledged state.
func (a *vmActor) snapshot() *messages.VM {
	c := *a.vm
	c.Spec.Networks = append([]messages.NICSpec(nil), a.vm.Spec.Networks...)
	c.Status.Conditions = append([]messages.Condition(nil), a.vm.Status.Conditions...)
	c.Status.Addresses = append([]string(nil), a.vm.Status.Addresses...)
	c.Status.NICs = append([]messages.NICStatus(nil), a.vm.Status.NICs...)
	return &c
}

// newTask builds a task and its job; opts carries the request's options
// (force, timeout) to the job, and so to the agent.
func (a *vmActor) newTask(kind string, vm *messages.VM, now time.Time, opts messages.RequestVMTask) (*messages.Task, *messages.Job) {
	task := &messages.Task{ID: messages.NewID(), Kind: kind, State: messages.TaskPending,
		Target: messages.Target{Kind: "vm", ID: vm.ID, Name: vm.Name}, Owner: vm.Owner,
		CreatedAt: now, UpdatedAt: now}
	attempts := a.deps.JobAttempts
	if attempts <= 0 {
		attempts = messages.DefaultJobAttempts
	}
	job := &messages.Job{ID: messages.NewID(), TaskID: task.ID, Kind: kind, Target: task.Target,
		MaxAttempts: attempts, NotBefore: now, CreatedAt: now, Force: opts.Force, TimeoutSeconds: opts.TimeoutSeconds}
	task.JobID = job.ID
	return task, job
}

func (a *vmActor) planCreate(m messages.CreateVM) (plan, error) {
	if a.vm != nil {
		return plan{}, messages.Errorf(messages.KindConflict, "id_conflict", "vm %s already exists", a.id)
	}
	spec, err := messages.PrepareVMCreate(m.Name, m.Spec)
	if err != nil {
		return plan{}, err
	}
	now := a.deps.Store.Now().UTC()
	vm := &messages.VM{ID: a.id, Name: m.Name, Owner: m.Owner, Generation: 1, Spec: spec,
		Status:    messages.VMStatus{Phase: messages.PhasePending, Message: "waiting to be placed on a node"},
		CreatedAt: now, UpdatedAt: now}
	task, job := a.newTask(messages.TaskVMCreate, vm, now, messages.RequestVMTask{})
	vm.Status.ActiveTask = task.ID
	schedulable := a.deps.Schedulable
	// Reading the nodes, the owner's quota and usage, and the networks'
	// allocations is I/O, so the whole create runs off the actor as the
	// plan's commit. The VM row, its task and job, its NICs and its owner's
	// usage commit in one transaction.
	commit := func(c context.Context, st *store.Store) error {
		if schedulable != nil {
			if err := schedulable(c, vm); err != nil {
				return err
			}
		}
		return st.WithUsage(c, vm.Owner, messages.UsageOf(spec), func(charge store.Charge) error {
			extra := func(t *store.Txn) {
				store.AddTask(t, task, job)
				charge(t)
			}
			if len(spec.Networks) > 0 {
				return st.CreateVMWithNICs(c, vm, extra)
			}
			t := store.NewTxn()
			store.CreateVM(t, vm)
			extra(t)
			return st.Commit(c, t)
		})
	}
	return plan{commit: commit, next: vm, task: task}, nil
}

func (a *vmActor) planUpdate(m messages.UpdateVM) (plan, error) {
	if m.Revision != 0 && m.Revision != a.vm.Revision {
		return plan{}, messages.ErrStaleRevision.WithDetail("current_revision", a.vm.Revision)
	}
	next := a.snapshot()
	p := m.Patch
	if p.CPUs != nil {
		next.Spec.CPUs = *p.CPUs
	}
	if p.MemoryMiB != nil {
		next.Spec.MemoryMiB = *p.MemoryMiB
	}
	if p.DiskGiB != nil {
		if *p.DiskGiB < a.vm.Spec.DiskGiB {
			return plan{}, messages.Invalid("spec.disk_gib", "disks only grow: %d is below the current %d", *p.DiskGiB, a.vm.Spec.DiskGiB)
		}
		next.Spec.DiskGiB = *p.DiskGiB
	}
	if p.UserData != nil {
		next.Spec.UserData = *p.UserData
	}
	if err := next.Spec.Validate(); err != nil {
		return plan{}, err
	}
	next.Generation++
	next.UpdatedAt = a.deps.Store.Now().UTC()
	delta := messages.UsageOf(next.Spec).Sub(messages.UsageOf(a.vm.Spec))
	if delta == (messages.Usage{}) {
		return plan{txn: store.NewTxn().Update(store.VMs, next), next: next}, nil
	}
	// A resize moves the owner's usage with the row, within their quota.
	commit := func(c context.Context, st *store.Store) error {
		return st.WithUsage(c, next.Owner, delta, func(charge store.Charge) error {
			t := store.NewTxn().Update(store.VMs, next)
			charge(t)
			return st.Commit(c, t)
		})
	}
	return plan{commit: commit, next: next}, nil
}

// maxTimeoutSeconds bounds how long a graceful stop or reboot may wait.
const maxTimeoutSeconds = 3600

func (a *vmActor) planTask(m messages.RequestVMTask) (plan, error) {
	if a.vm.Status.ActiveTask != "" {
		return plan{}, messages.Errorf(messages.KindConflict, "vm_busy",
			"vm %s has a task in progress; wait for it or cancel it", a.vm.Name).WithDetail("task_id", a.vm.Status.ActiveTask)
	}
	if m.TimeoutSeconds < 0 || m.TimeoutSeconds > maxTimeoutSeconds {
		return plan{}, messages.Invalid("timeout_seconds", "must be between 0 and %d", maxTimeoutSeconds)
	}
	next := a.snapshot()
	switch m.Kind {
	case messages.TaskVMStart:
		next.Spec.PowerState = messages.PowerRunning
	case messages.TaskVMStop, messages.TaskVMPoweroff:
		next.Spec.PowerState = messages.PowerStopped
	case messages.TaskVMReboot:
		// A reboot keeps the VM running; rebooting a VM that is not placed
		// or not running has nothing to act on.
		if a.vm.Status.Node == "" || a.vm.Spec.PowerState != messages.PowerRunning {
			return plan{}, messages.Errorf(messages.KindConflict, "vm_not_running",
				"vm %s is not running; start it instead", a.vm.Name)
		}
	case messages.TaskVMDelete:
		if a.vm.Status.Phase == messages.PhaseRunning && !m.Force {
			return plan{}, messages.Errorf(messages.KindConflict, "vm_running",
				"vm %s is running; stop it first or delete with force", a.vm.Name)
		}
	default:
		return plan{}, messages.Errorf(messages.KindInvalid, "unknown_operation", "unknown vm operation %q", m.Kind)
	}
	now := a.deps.Store.Now().UTC()
	if next.Spec.PowerState != a.vm.Spec.PowerState {
		next.Generation++
	}
	next.UpdatedAt = now
	task, job := a.newTask(m.Kind, next, now, m)
	next.Status.ActiveTask = task.ID
	t := store.NewTxn().Update(store.VMs, next)
	store.AddTask(t, task, job)
	return plan{txn: t, next: next, task: task}, nil
}

// cancelWork cancels the VM's pending task. It reads the task first, which is
// I/O, so it runs as the prepare step of a write.
func (a *vmActor) cancelWork(m messages.CancelVMTask) func(context.Context, *store.Store) (plan, error) {
	vm := a.snapshot()
	return func(c context.Context, st *store.Store) (plan, error) {
		task, err := st.GetTask(c, m.TaskID)
		if err != nil {
			return plan{}, err
		}
		if messages.Terminal(task.State) {
			return plan{}, messages.ErrTaskTerminal
		}
		if task.State != messages.TaskPending {
			return plan{}, messages.ErrTaskNotPending
		}
		now := st.Now().UTC()
		task.State = messages.TaskCancelled
		task.Message = "cancelled before it ran"
		task.UpdatedAt, task.FinishedAt = now, &now
		t := store.NewTxn().Update(store.Tasks, task)
		store.CancelJob(t, task.JobID)
		if vm.Status.ActiveTask == task.ID {
			vm.Status.ActiveTask = ""
			if task.Kind == messages.TaskVMCreate {
				// Nothing exists on any node yet: the VM stays, stopped, and a
				// later start creates it.
				vm.Spec.PowerState = messages.PowerStopped
				vm.Status.Phase = messages.PhaseStopped
				vm.Status.Message = "creation cancelled"
			}
			vm.UpdatedAt = now
			t.Update(store.VMs, vm)
		}
		return plan{txn: t, next: vm, task: task}, nil
	}
}

func (a *vmActor) planFinish(m messages.FinishVMJob) (plan, error) {
	next := a.snapshot()
	if next.Status.ActiveTask == m.Task.ID {
		next.Status.ActiveTask = ""
	}
	if m.Status != nil {
		active := next.Status.ActiveTask
		nics, addrs := next.Status.NICs, next.Status.Addresses
		next.Status = *m.Status
		next.Status.ActiveTask = active
		if len(nics) > 0 {
			// The control plane owns the NIC allocation: a job's status
			// never replaces it, and the delete below must release it.
			next.Status.NICs, next.Status.Addresses = nics, addrs
		}
		noteInterruption(next, "", a.deps.Store.Now())
	}
	if m.Power != "" {
		next.Spec.PowerState = m.Power
	}
	next.UpdatedAt = a.deps.Store.Now().UTC()
	if m.Delete {
		// The owner's usage is released in the transaction that deletes
		// the row, never before (a failed delete keeps using it).
		release := messages.Usage{}.Sub(messages.UsageOf(a.vm.Spec))
		commit := func(c context.Context, st *store.Store) error {
			return st.WithUsage(c, next.Owner, release, func(charge store.Charge) error {
				t := store.NewTxn()
				store.FinishJob(t, clientv3.LeaseID(m.Lease), m.Job, m.Task)
				store.DeleteVM(t, next)
				charge(t)
				return st.Commit(c, t)
			})
		}
		return plan{commit: commit, gone: true, task: m.Task}, nil
	}
	t := store.NewTxn()
	store.FinishJob(t, clientv3.LeaseID(m.Lease), m.Job, m.Task)
	t.Update(store.VMs, next)
	return plan{txn: t, next: next, task: m.Task}, nil
}

func finishWithoutVM(m messages.FinishVMJob) func(context.Context, *store.Store) (plan, error) {
	return func(context.Context, *store.Store) (plan, error) {
		t := store.FinishJob(store.NewTxn(), clientv3.LeaseID(m.Lease), m.Job, m.Task)
		return plan{txn: t, gone: true, task: m.Task}, nil
	}
}
