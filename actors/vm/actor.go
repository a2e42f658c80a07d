// Package vm is the control plane's VM actor: one actor per VM that loads the
// VM from etcd, serializes every change to it, and writes before it answers.
package vm

import (
	"context"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
}

// Props returns the props of the actor for VM id.
func Props(d Deps, id string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &vmActor{deps: d, id: id} })
}

// vmActor has one write in flight at most; commands that arrive meanwhile
// wait in queue, in order, so each sees the state the previous one left.
type vmActor struct {
	deps Deps
	id   string
	vm   *messages.VM // nil when the VM does not exist
	// loaded says vm reflects etcd. The row is read on the first command, not
	// on start, so that a create (a new id, nothing to read) costs no read.
	loaded bool
	busy   bool
	queue  []queued
	// lastActive is when the actor last got a command or finished I/O; it
	// asks to be passivated once PassivateAfter has passed since.
	lastActive time.Time
	// stopIdle cancels the pending idle check, so a stopped actor leaves
	// no timer behind.
	stopIdle func()
}

type queued struct {
	msg    any
	sender *actor.PID
	// deadline, when set, is when the caller stops waiting; a command still
	// queued then is dropped rather than run behind the caller's back.
	deadline time.Time
}

// loaded and committed come back from I/O started with Runtime.Go. They carry
// the actor instance that started the I/O: after a restart, results meant for
// the previous instance are ignored.
type loaded struct {
	by  *vmActor
	vm  *messages.VM
	err error
}

type committed struct {
	by     *vmActor
	sender *actor.PID
	next   *messages.VM
	gone   bool
	task   *messages.Task
	err    error
}

// idleCheck is the actor's passivation timer. protoactor's receive timeout is
// not used: it fires once and then stays off, and its timer goroutine races
// with the actor's own (go test -race reports it).
type idleCheck struct{ by *vmActor }

func (a *vmActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.lastActive = time.Now()
		if a.deps.PassivateAfter > 0 {
			a.stopIdle = a.deps.Runtime.After(ctx.Self(), a.deps.PassivateAfter, idleCheck{by: a})
		}
	case *actor.Stopping, *actor.Restarting:
		if a.stopIdle != nil {
			a.stopIdle()
		}
	case loaded:
		if m.by != a {
			return
		}
		a.lastActive = time.Now()
		a.busy = false
		if m.err != nil && messages.KindOf(m.err) != messages.KindNotFound {
			// etcd cannot answer: tell the waiting callers now rather than let
			// them time out, and read again on the next command.
			a.deps.Log.Warn("load vm", "vm", a.id, "err", m.err)
			for _, q := range a.queue {
				reply(ctx, q.sender, messages.VMReply{Err: m.err})
			}
			a.queue = nil
			return
		}
		a.vm = m.vm
		a.loaded = true
		a.drain(ctx)
	case committed:
		if m.by != a {
			return
		}
		a.lastActive = time.Now()
		a.busy = false
		if m.err == nil {
			if m.gone {
				a.vm = nil
			} else if m.next != nil {
				a.vm = m.next
			}
		}
		reply(ctx, m.sender, messages.VMReply{VM: m.next, Task: m.task, Err: m.err})
		if m.err != nil {
			// A refused or failed write (another replica changed the row, a
			// guard failed, etcd hiccuped) may mean the state here is not
			// etcd's: read it again before the next command.
			a.load(ctx)
			return
		}
		a.drain(ctx)
	case system.Crashed:
		panic(m.Reason)
	case idleCheck:
		if m.by != a {
			return
		}
		// Check again when the actor may have become idle; after asking to
		// passivate, in case the guardian finds it busy.
		next := a.deps.PassivateAfter - time.Since(a.lastActive)
		if next <= 0 {
			if a.idle() {
				ctx.Send(ctx.Parent(), system.Passivate{ID: a.id})
			}
			next = a.deps.PassivateAfter
		}
		a.stopIdle = a.deps.Runtime.After(ctx.Self(), next, idleCheck{by: a})
	case system.StopIfIdle:
		if a.idle() {
			ctx.Stop(ctx.Self())
		} else {
			ctx.Send(ctx.Parent(), system.StillBusy{ID: a.id})
		}
	case system.Deadlined:
		a.lastActive = time.Now()
		if len(a.queue) >= maxQueue {
			reply(ctx, ctx.Sender(), messages.VMReply{Err: errOverloaded})
			return
		}
		a.queue = append(a.queue, queued{msg: m.Msg, sender: ctx.Sender(), deadline: m.Deadline})
		a.startOrDrain(ctx, m.Msg)
	case messages.GetVM, messages.CreateVM, messages.UpdateVM, messages.RequestVMTask,
		messages.CancelVMTask, messages.FinishVMJob, messages.PlaceVM, messages.ObserveVM, messages.MarkVMUnknown:
		a.lastActive = time.Now()
		if len(a.queue) >= maxQueue {
			reply(ctx, ctx.Sender(), messages.VMReply{Err: errOverloaded})
			return
		}
		a.queue = append(a.queue, queued{msg: m, sender: ctx.Sender()})
		a.startOrDrain(ctx, m)
	}
}

// reply answers sender, if there is one: node actors tell VM actors what
// they observed without waiting for an answer.
func reply(ctx actor.Context, sender *actor.PID, r messages.VMReply) {
	if sender != nil {
		ctx.Send(sender, r)
	}
}

// maxQueue bounds the commands waiting for one VM, so a flood against one VM
// costs bounded memory and gets a clear refusal.
const maxQueue = 256

var errOverloaded = messages.Errorf(messages.KindUnavailable, "vm_overloaded",
	"too many operations are waiting for this vm; retry later")

// startOrDrain reads the VM before its first command, except before a create.
func (a *vmActor) startOrDrain(ctx actor.Context, m any) {
	if !a.loaded && !a.busy {
		if _, creating := m.(messages.CreateVM); !creating || len(a.queue) > 1 {
			a.load(ctx)
			return
		}
		// A create names a new id: there is nothing to read, and the
		// transaction's create guard refuses it should a row exist.
		a.loaded = true
	}
	a.drain(ctx)
}

func (a *vmActor) idle() bool { return !a.busy && len(a.queue) == 0 }

func (a *vmActor) load(ctx actor.Context) {
	a.busy = true
	st, id := a.deps.Store, a.id
	a.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		vm, err := st.GetVM(c, id)
		return loaded{by: a, vm: vm, err: err}
	})
}

// drain handles queued commands until one starts a write.
func (a *vmActor) drain(ctx actor.Context) {
	for !a.busy && len(a.queue) > 0 {
		q := a.queue[0]
		a.queue = a.queue[1:]
		if !q.deadline.IsZero() && time.Now().After(q.deadline) {
			continue
		}
		a.handle(ctx, q)
	}
	// An actor for an id that does not exist (a lookup of a random id) is not
	// worth keeping until the receive timeout.
	if a.vm == nil && a.idle() {
		ctx.Send(ctx.Parent(), system.Passivate{ID: a.id})
	}
}

func (a *vmActor) handle(ctx actor.Context, q queued) {
	answer := func(r messages.VMReply) { reply(ctx, q.sender, r) }
	if _, creating := q.msg.(messages.CreateVM); !creating && a.vm == nil {
		if f, ok := q.msg.(messages.FinishVMJob); ok {
			// The VM is gone (deleted elsewhere); still end its job.
			a.write(ctx, q.sender, finishWithoutVM(f))
			return
		}
		answer(messages.VMReply{Err: messages.NotFound("vm", a.id)})
		return
	}
	var p plan
	var err error
	switch m := q.msg.(type) {
	case messages.GetVM:
		answer(messages.VMReply{VM: a.vm})
		return
	case messages.CreateVM:
		p, err = a.planCreate(m)
	case messages.UpdateVM:
		p, err = a.planUpdate(m)
	case messages.RequestVMTask:
		p, err = a.planTask(m)
	case messages.CancelVMTask:
		a.write(ctx, q.sender, a.cancelWork(m))
		return
	case messages.FinishVMJob:
		p, err = a.planFinish(m)
	case messages.PlaceVM:
		p, err = a.planPlace(m)
	case messages.ObserveVM:
		p, err = a.planObserve(m)
	case messages.MarkVMUnknown:
		p, err = a.planUnknown(m)
	}
	if err != nil {
		answer(messages.VMReply{Err: err})
		return
	}
	if p.txn == nil && p.commit == nil {
		// Nothing changed (an observation that matches the status).
		answer(messages.VMReply{VM: a.vm})
		return
	}
	a.write(ctx, q.sender, func(c context.Context, st *store.Store) (plan, error) { return p, nil })
}

// plan is one change to commit: the transaction, the VM as it will be after
// it (nil with gone when deleted) and the task to answer with.
type plan struct {
	txn *store.Txn
	// commit, when set, replaces committing txn: a change that must read
	// and retry inside the store (allocating addresses) builds its own.
	commit func(context.Context, *store.Store) error
	next   *messages.VM
	gone   bool
	task   *messages.Task
}

// write runs prepare and commits its plan off the actor goroutine, then
// answers sender with the outcome.
func (a *vmActor) write(ctx actor.Context, sender *actor.PID, prepare func(context.Context, *store.Store) (plan, error)) {
	a.busy = true
	st := a.deps.Store
	a.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		p, err := prepare(c, st)
		if err == nil {
			if p.commit != nil {
				err = p.commit(c, st)
			} else {
				err = st.Commit(c, p.txn)
			}
		}
		if err != nil {
			return committed{by: a, sender: sender, err: err}
		}
		return committed{by: a, sender: sender, next: p.next, gone: p.gone, task: p.task}
	})
}
