// Package vm is the control plane's VM actor: one actor per VM that loads the
// VM from etcd, serializes every change to it, and writes before it answers.
// The loop itself is actors/entity; this package is the VM's behaviour: how
// each command is planned into a transaction.
package vm

import (
	"context"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/entity"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Deps are what a VM actor needs from the outside.
type Deps struct {
	Runtime *system.Runtime
	Store   *store.Store
	Log     *slog.Logger
	// PassivateAfter stops an idle actor; the next message reloads it.
	PassivateAfter time.Duration
	// JobAttempts is the attempt budget of the jobs this actor creates.
	JobAttempts int
	// Schedulable refuses a create that no node could ever host
	// (placement's unschedulable, 422) before anything is written; nil
	// admits every create and leaves it to placement.
	Schedulable func(context.Context, *messages.VM) error
	// Admit judges a growth of a node's allocation document (placement's
	// capacity × overcommit: insufficient_capacity) in the transaction
	// that places or resizes a VM; nil admits every growth, and the
	// documents are kept in step all the same.
	Admit store.AdmitAllocation
}

// maxQueue bounds the commands waiting for one VM, so a flood against one VM
// costs bounded memory and gets a clear refusal.
const maxQueue = 256

var errOverloaded = messages.Errorf(messages.KindUnavailable, "vm_overloaded",
	"too many operations are waiting for this vm; retry later")

// Props returns the props of the actor for VM id.
func Props(d Deps, id string) *actor.Props {
	cfg := entity.Config{Runtime: d.Runtime, Store: d.Store, Log: d.Log, Kind: "vm", IDKey: "vm",
		PassivateAfter: d.PassivateAfter, MaxQueue: maxQueue, Overloaded: errOverloaded}
	return entity.Props(cfg, id, func() entity.Behaviour[messages.VM, messages.VMReply] {
		return &behaviour{deps: d, id: id}
	})
}

// plan is one VM command's decision.
type plan = entity.Plan[messages.VM, messages.VMReply]

// behaviour plans the VM's commands; it keeps nothing of its own, the VM is
// the loop's.
type behaviour struct {
	deps Deps
	id   string
}

var _ entity.Behaviour[messages.VM, messages.VMReply] = (*behaviour)(nil)

func (b *behaviour) Load(c context.Context) (*messages.VM, error) { return b.deps.Store.GetVM(c, b.id) }

func (b *behaviour) Loaded(*messages.VM) {}

func (b *behaviour) Command(msg any) bool {
	switch msg.(type) {
	case messages.GetVM, messages.CreateVM, messages.UpdateVM, messages.RequestVMTask,
		messages.CancelVMTask, messages.FinishVMJob, messages.PlaceVM, messages.ObserveVM, messages.MarkVMUnknown,
		messages.GetVMJob, messages.ProgressVMJob, messages.RetryVMJob:
		return true
	}
	return false
}

// Fresh: a create names a new id, so there is nothing to read first.
func (b *behaviour) Fresh(cmd any) bool {
	_, creating := cmd.(messages.CreateVM)
	return creating
}

func (b *behaviour) Fail(err error) messages.VMReply { return messages.VMReply{Err: err} }

func (b *behaviour) Plan(cur *messages.VM, cmd any) plan {
	// A job's commands go on when the VM is gone (deleted elsewhere): its
	// attempt still reads and ends its task.
	switch m := cmd.(type) {
	case messages.GetVMJob:
		return b.planJobView(cur, m)
	case messages.ProgressVMJob:
		return b.planProgress(m)
	case messages.RetryVMJob:
		return b.planRetry(m)
	case messages.FinishVMJob:
		if cur == nil {
			return b.finishWithoutVM(m)
		}
	}
	if _, creating := cmd.(messages.CreateVM); !creating && cur == nil {
		return plan{Err: messages.NotFound("vm", b.id)}
	}
	var p plan
	switch m := cmd.(type) {
	case messages.GetVM:
		return plan{Reply: messages.VMReply{VM: cur}}
	case messages.CreateVM:
		p = b.planCreate(cur, m)
	case messages.UpdateVM:
		p = b.planUpdate(cur, m)
	case messages.RequestVMTask:
		p = b.planTask(cur, m)
	case messages.CancelVMTask:
		p = b.planCancel(cur, m)
	case messages.FinishVMJob:
		p = b.planFinish(cur, m)
	case messages.PlaceVM:
		p = b.planPlace(cur, m)
	case messages.ObserveVM:
		p = b.planObserve(cur, m)
	case messages.MarkVMUnknown:
		p = b.planUnknown(cur, m)
	}
	if p.Err == nil && p.Txn == nil && p.Write == nil {
		// Nothing changed (an observation that matches the status).
		return plan{Reply: messages.VMReply{VM: cur}}
	}
	if dryRun(cmd) {
		return b.dry(p)
	}
	return p
}

// dryRun reports whether cmd asks for a dry run (?dry_run=true).
func dryRun(cmd any) bool {
	switch m := cmd.(type) {
	case messages.CreateVM:
		return m.DryRun
	case messages.UpdateVM:
		return m.DryRun
	case messages.RequestVMTask:
		return m.DryRun
	}
	return false
}

// dry turns a plan into its dry run: the same checks, its change committed
// under store.DryRun (every guard evaluated, nothing written), and the
// actor's state left as it was. The answer is the VM as the change would
// leave it, without the task it would have started (which does not exist).
func (b *behaviour) dry(p plan) plan {
	if p.Err != nil {
		return p
	}
	st := b.deps.Store
	answer := func(q plan) plan {
		r := q.Reply
		if q.Answer != nil && q.Next != nil {
			r = q.Answer(q.Next)
		}
		if r.VM != nil {
			vm := snapshot(r.VM)
			vm.Status.ActiveTask = ""
			r.VM = vm
		}
		r.Task = nil
		return plan{Reply: r}
	}
	return plan{Write: func(c context.Context) (plan, error) {
		c = store.DryRun(c)
		q := p
		if q.Write != nil {
			var err error
			if q, err = q.Write(c); err != nil {
				return plan{}, err
			}
		}
		if q.Txn != nil {
			if err := st.Commit(c, q.Txn); err != nil {
				return plan{}, err
			}
		}
		return answer(q), nil
	}}
}

// change is the plan that commits t and leaves next (nil with gone when
// deleted), answering with next and task.
func change(t *store.Txn, next *messages.VM, task *messages.Task) plan {
	return plan{Txn: t, Next: next, Gone: next == nil, Reply: messages.VMReply{VM: next, Task: task}}
}

// refuse is the plan that answers err.
func refuse(err error) plan { return plan{Err: err} }

// writing is the plan whose change commit makes itself, because it has to
// read inside the store first (quota usage, network addresses); it leaves
// next (nil when deleted) and answers with next and task.
func (b *behaviour) writing(commit func(context.Context, *store.Store) error, next *messages.VM, task *messages.Task) plan {
	st := b.deps.Store
	p := change(nil, next, task)
	p.Write = func(c context.Context) (plan, error) {
		if err := commit(c, st); err != nil {
			return plan{}, err
		}
		return change(nil, next, task), nil
	}
	return p
}
