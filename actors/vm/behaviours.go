package vm

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// snapshot copies the VM so a plan never mutates the acknowledged state.
func snapshot(vm *messages.VM) *messages.VM {
	c := *vm
	c.Spec.Networks = append([]messages.NICSpec(nil), vm.Spec.Networks...)
	c.Status.Conditions = append([]messages.Condition(nil), vm.Status.Conditions...)
	c.Status.Addresses = append([]string(nil), vm.Status.Addresses...)
	c.Status.NICs = append([]messages.NICStatus(nil), vm.Status.NICs...)
	return &c
}

// newTask builds a task and its job; opts carries the request's options
// (force, timeout) to the job, and so to the agent.
func (b *behaviour) newTask(kind string, vm *messages.VM, now time.Time, opts messages.RequestVMTask) (*messages.Task, *messages.Job) {
	task := &messages.Task{ID: messages.NewID(), Kind: kind, State: messages.TaskPending,
		Target: messages.Target{Kind: "vm", ID: vm.ID, Name: vm.Name}, Owner: vm.Owner,
		CreatedAt: now, UpdatedAt: now}
	attempts := b.deps.JobAttempts
	if attempts <= 0 {
		attempts = messages.DefaultJobAttempts
	}
	job := &messages.Job{ID: messages.NewID(), TaskID: task.ID, Kind: kind, Target: task.Target,
		MaxAttempts: attempts, NotBefore: now, CreatedAt: now, Force: opts.Force, TimeoutSeconds: opts.TimeoutSeconds}
	task.JobID = job.ID
	return task, job
}

func (b *behaviour) planCreate(cur *messages.VM, m messages.CreateVM) plan {
	if cur != nil {
		return refuse(messages.Errorf(messages.KindConflict, "id_conflict", "vm %s already exists", b.id))
	}
	spec, err := messages.PrepareVMCreate(m.Name, m.Spec)
	if err != nil {
		return refuse(err)
	}
	now := b.deps.Store.Now().UTC()
	vm := &messages.VM{ID: b.id, Name: m.Name, Owner: m.Owner, Generation: 1, Spec: spec,
		Status:    messages.VMStatus{Phase: messages.PhasePending, Message: "waiting to be placed on a node"},
		CreatedAt: now, UpdatedAt: now}
	task, job := b.newTask(messages.TaskVMCreate, vm, now, messages.RequestVMTask{})
	vm.Status.ActiveTask = task.ID
	schedulable := b.deps.Schedulable
	// Reading the nodes, the owner's quota and usage, and the networks'
	// allocations is I/O, so the whole create runs off the actor as the
	// plan's write. The VM row, its task and job, its NICs and its owner's
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
				store.AddEvents(t, messages.VMTransition(nil, vm, now))
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
	return b.writing(commit, vm, task)
}

func (b *behaviour) planUpdate(cur *messages.VM, m messages.UpdateVM) plan {
	if m.Revision != 0 && m.Revision != cur.Revision {
		return refuse(messages.ErrStaleRevision.WithDetail("current_revision", cur.Revision))
	}
	next := snapshot(cur)
	p := m.Patch
	if p.CPUs != nil {
		next.Spec.CPUs = *p.CPUs
	}
	if p.MemoryMiB != nil {
		next.Spec.MemoryMiB = *p.MemoryMiB
	}
	if p.DiskGiB != nil {
		if *p.DiskGiB < cur.Spec.DiskGiB {
			return refuse(messages.Invalid("spec.disk_gib", "disks only grow: %d is below the current %d", *p.DiskGiB, cur.Spec.DiskGiB))
		}
		next.Spec.DiskGiB = *p.DiskGiB
	}
	if p.UserData != nil {
		next.Spec.UserData = *p.UserData
	}
	if err := next.Spec.Validate(); err != nil {
		return refuse(err)
	}
	next.Generation++
	next.UpdatedAt = b.deps.Store.Now().UTC()
	delta := messages.UsageOf(next.Spec).Sub(messages.UsageOf(cur.Spec))
	if delta == (messages.Usage{}) {
		return change(store.NewTxn().Update(store.VMs, next), next, nil)
	}
	// A resize moves the owner's usage with the row, within their quota,
	// and the allocation of the node the VM is placed on, within the
	// node's capacity (a growth the node cannot take is refused with
	// insufficient_capacity).
	admit, before := b.deps.Admit, cur
	commit := func(c context.Context, st *store.Store) error {
		return st.WithUsage(c, next.Owner, delta, func(charge store.Charge) error {
			return st.WithAllocations(c, before, next, admit, func(alloc store.Charge) error {
				t := store.NewTxn().Update(store.VMs, next)
				charge(t)
				alloc(t)
				return st.Commit(c, t)
			})
		})
	}
	return b.writing(commit, next, nil)
}

// maxTimeoutSeconds bounds how long a graceful stop or reboot may wait.
const maxTimeoutSeconds = 3600

func (b *behaviour) planTask(cur *messages.VM, m messages.RequestVMTask) plan {
	if cur.Status.ActiveTask != "" {
		return refuse(messages.Errorf(messages.KindConflict, "vm_busy",
			"vm %s has a task in progress; wait for it or cancel it", cur.Name).WithDetail("task_id", cur.Status.ActiveTask))
	}
	if m.TimeoutSeconds < 0 || m.TimeoutSeconds > maxTimeoutSeconds {
		return refuse(messages.Invalid("timeout_seconds", "must be between 0 and %d", maxTimeoutSeconds))
	}
	next := snapshot(cur)
	switch m.Kind {
	case messages.TaskVMStart:
		next.Spec.PowerState = messages.PowerRunning
	case messages.TaskVMStop, messages.TaskVMPoweroff:
		next.Spec.PowerState = messages.PowerStopped
	case messages.TaskVMReboot:
		// A reboot keeps the VM running; rebooting a VM that is not placed
		// or not running has nothing to act on.
		if cur.Status.Node == "" || cur.Spec.PowerState != messages.PowerRunning {
			return refuse(messages.Errorf(messages.KindConflict, "vm_not_running",
				"vm %s is not running; start it instead", cur.Name))
		}
	case messages.TaskVMDelete:
		if cur.Status.Phase == messages.PhaseRunning && !m.Force {
			return refuse(messages.Errorf(messages.KindConflict, "vm_running",
				"vm %s is running; stop it first or delete with force", cur.Name))
		}
	default:
		return refuse(messages.Errorf(messages.KindInvalid, "unknown_operation", "unknown vm operation %q", m.Kind))
	}
	now := b.deps.Store.Now().UTC()
	if next.Spec.PowerState != cur.Spec.PowerState {
		next.Generation++
	}
	next.UpdatedAt = now
	task, job := b.newTask(m.Kind, next, now, m)
	next.Status.ActiveTask = task.ID
	t := store.NewTxn().Update(store.VMs, next)
	store.AddTask(t, task, job)
	return change(t, next, task)
}

// planCancel cancels the VM's pending task. It reads the task first, which is
// I/O, so it runs as the plan's write.
func (b *behaviour) planCancel(cur *messages.VM, m messages.CancelVMTask) plan {
	vm := snapshot(cur)
	st := b.deps.Store
	return plan{Write: func(c context.Context) (plan, error) {
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
		return change(t, vm, task), nil
	}}
}

func (b *behaviour) planFinish(cur *messages.VM, m messages.FinishVMJob) plan {
	next := snapshot(cur)
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
		noteInterruption(next, "", b.deps.Store.Now())
	}
	if m.Power != "" {
		next.Spec.PowerState = m.Power
	}
	now := b.deps.Store.Now().UTC()
	next.UpdatedAt = now
	failed := messages.TaskFailedEvent(m.Task, now)
	before := cur
	if m.Delete {
		// The owner's usage and the node's allocation are released in the
		// transaction that deletes the row, never before (a failed delete
		// keeps using them).
		release := messages.Usage{}.Sub(messages.UsageOf(cur.Spec))
		commit := func(c context.Context, st *store.Store) error {
			return st.WithUsage(c, next.Owner, release, func(charge store.Charge) error {
				return st.WithAllocations(c, before, nil, nil, func(alloc store.Charge) error {
					t := store.NewTxn()
					store.FinishJob(t, clientv3.LeaseID(m.Lease), m.Job, m.Task)
					store.DeleteVM(t, next)
					charge(t)
					alloc(t)
					store.AddEvents(t, messages.VMTransition(cur, nil, now), failed)
					return st.Commit(c, t)
				})
			})
		}
		return b.writing(commit, nil, m.Task)
	}
	if next.Status.Node != cur.Status.Node {
		// A job's outcome names another node than the row (it never does
		// today: the node is committed by PlaceVM first): the allocations
		// move with it. The outcome already happened on the node, so it
		// is recorded even past the node's capacity.
		commit := func(c context.Context, st *store.Store) error {
			return st.WithAllocations(c, before, next, nil, func(alloc store.Charge) error {
				t := store.NewTxn()
				store.FinishJob(t, clientv3.LeaseID(m.Lease), m.Job, m.Task)
				t.Update(store.VMs, next)
				alloc(t)
				store.AddEvents(t, messages.VMTransition(cur, next, now), failed)
				return st.Commit(c, t)
			})
		}
		return b.writing(commit, next, m.Task)
	}
	t := store.NewTxn()
	store.FinishJob(t, clientv3.LeaseID(m.Lease), m.Job, m.Task)
	t.Update(store.VMs, next)
	store.AddEvents(t, messages.VMTransition(cur, next, now), failed)
	return change(t, next, m.Task)
}

func (b *behaviour) finishWithoutVM(m messages.FinishVMJob) plan {
	t := store.FinishJob(store.NewTxn(), clientv3.LeaseID(m.Lease), m.Job, m.Task)
	store.AddEvents(t, messages.TaskFailedEvent(m.Task, b.deps.Store.Now()))
	return change(t, nil, m.Task)
}
