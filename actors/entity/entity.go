// Package entity is the control plane's entity-actor loop, written once for
// every kind of entity (a VM, a node): one actor per entity that reads it
// from etcd on its first command, serializes every command through its
// mailbox, commits each change off the actor goroutine, answers only after
// the commit, and asks its guardian (actors/system) to passivate it when it
// has been idle. What differs between kinds is a Behaviour: how to read the
// entity and how to plan a command into a transaction.
package entity

import (
	"context"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Behaviour is one kind of entity, E, answered with replies of type R. A
// fresh Behaviour is made for each incarnation of an actor, so it may keep
// in-memory state of its own (a node's last heartbeat) that a restart
// forgets.
type Behaviour[E, R any] interface {
	// Load reads the entity from etcd, off the actor goroutine; a not-found
	// error means it does not exist.
	Load(ctx context.Context) (*E, error)
	// Loaded is told, on the actor goroutine, what a read found (nil: the
	// entity does not exist).
	Loaded(e *E)
	// Command reports whether msg is one of this entity's commands.
	Command(msg any) bool
	// Fresh reports a command that names a new id (a create): sent first,
	// it is planned without reading, since there is nothing to read and its
	// transaction's create guard refuses it should a row exist.
	Fresh(cmd any) bool
	// Plan decides cmd against e (nil: the entity does not exist). It does
	// no I/O and never changes e: the change it decides is the plan, applied
	// once it is committed. Only the behaviour's own bookkeeping may move
	// (a node's last heartbeat), and it must bear the same command being
	// planned again, which happens when a commit found the entity changed.
	Plan(e *E, cmd any) Plan[E, R]
	// Fail is the reply that carries err.
	Fail(err error) R
}

// Plan is a behaviour's decision about one command.
type Plan[E, R any] struct {
	// Err refuses the command: it is answered with Fail(Err) and nothing is
	// written.
	Err error
	// Reply answers the command once the change is committed, or at once
	// when there is nothing to write.
	Reply R
	// Answer, when set, replaces Reply: it builds the answer from the entity
	// as committed (its revision is then etcd's), for a reply that must not
	// share memory with the actor's state.
	Answer func(next *E) R
	// Next is the entity after the change; nil keeps it as it is, unless
	// Gone says the change deletes it. With nothing to write, Next is a
	// change kept in memory only.
	Next *E
	Gone bool
	// Txn is the change to commit, all its keys in one transaction.
	Txn *store.Txn
	// Write, instead of Txn, is a change that has to read before it
	// commits (quota usage, address allocation, a task's current state).
	// It runs off the actor and returns the plan as committed: its Next and
	// Reply replace these, and its Txn, when set, is committed after it.
	Write func(ctx context.Context) (Plan[E, R], error)
	// After runs on the actor goroutine once the change is committed (or at
	// once when there is nothing to write), before the reply is sent.
	After func()
}

func (p Plan[E, R]) writes() bool { return p.Txn != nil || p.Write != nil }

// Config is what the loop needs from the outside.
type Config struct {
	Runtime *system.Runtime
	Store   *store.Store
	Log     *slog.Logger
	// Kind names the entity in log lines ("vm"); IDKey is the log key of
	// its id ("vm", "node_id").
	Kind, IDKey string
	// PassivateAfter stops an actor idle this long; 0 keeps it while its
	// entity exists. An actor whose entity does not exist always asks to
	// stop as soon as it is idle.
	PassivateAfter time.Duration
	// MaxQueue bounds the commands waiting for one entity, so a flood
	// against one entity costs bounded memory; Overloaded refuses the rest.
	MaxQueue   int
	Overloaded error
	// MaxStale bounds how old the state a command is planned against may
	// be: the read that produced it must have begun no earlier
	// than MaxStale before the command arrived, or the entity is read again
	// first. Another replica's actor for the same entity writes behind this
	// one's back; compare-and-set refuses a write planned on a stale state,
	// but a read, or a command that plans no write, would otherwise answer
	// from memory. 0 (the default) makes every answer linearizable: one read
	// serves all the commands that queued before it began. Negative trusts
	// the state until the actor stops (an entity with one writer).
	MaxStale time.Duration
}

// MaxReplans bounds how often one command is planned again after its commit
// found the entity changed by another writer (another replica); then the
// conflict is the answer.
const MaxReplans = 3

// Props returns the props of the actor for one entity; produce makes its
// behaviour for each incarnation.
func Props[E, R any](cfg Config, id string, produce func() Behaviour[E, R]) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &loop[E, R]{cfg: cfg, id: id, b: produce()}
	})
}

// loop has one etcd operation in flight at most; commands that arrive
// meanwhile wait in queue, in order, so each is planned against the state
// the previous one left.
type loop[E, R any] struct {
	cfg   Config
	id    string
	b     Behaviour[E, R]
	state *E // nil when the entity does not exist
	// loaded says state reflects etcd. The row is read on the first
	// command, not on start, so that a create (a new id) costs no read.
	loaded bool
	// stateAt is when the read that produced state began: state is etcd's
	// as of some instant after it.
	stateAt time.Time
	busy    bool
	queue   []queued
	// lastActive is when the actor last got a command or finished I/O; it
	// asks to be passivated once PassivateAfter has passed since.
	lastActive time.Time
	// stopIdle cancels the pending idle check, so a stopped actor leaves no
	// timer behind.
	stopIdle func()
}

type queued struct {
	msg    any
	sender *actor.PID
	// deadline, when set, is when the caller stops waiting; a command still
	// queued then is dropped rather than run behind the caller's back.
	deadline time.Time
	// replans counts how often a commit conflict sent it back to be planned.
	replans int
	// arrived is when the actor got it, for Config.MaxStale.
	arrived time.Time
	// res is the Idempotency-Key reservation its change commits under.
	res *store.Reservation
}

// loaded and committed come back from I/O started with Runtime.Go. They carry
// the loop that started the I/O: after a restart, results meant for the
// previous incarnation are ignored.
type loaded[E, R any] struct {
	by  *loop[E, R]
	at  time.Time
	e   *E
	err error
}

type committed[E, R any] struct {
	by  *loop[E, R]
	q   queued
	p   Plan[E, R]
	err error
}

// idleCheck is the passivation timer. protoactor's receive timeout is not
// used: it fires once and then stays off, and its timer goroutine races with
// the actor's own (go test -race reports it).
type idleCheck[E, R any] struct{ by *loop[E, R] }

func (a *loop[E, R]) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.lastActive = time.Now()
		if a.cfg.PassivateAfter > 0 {
			a.stopIdle = a.cfg.Runtime.After(ctx.Self(), a.cfg.PassivateAfter, idleCheck[E, R]{by: a})
		}
	case *actor.Stopping, *actor.Restarting:
		if a.stopIdle != nil {
			a.stopIdle()
		}
	case loaded[E, R]:
		if m.by == a {
			a.onLoaded(ctx, m)
		}
	case committed[E, R]:
		if m.by == a {
			a.onCommitted(ctx, m)
		}
	case system.Crashed:
		panic(m.Reason)
	case idleCheck[E, R]:
		if m.by != a {
			return
		}
		// Check again when the actor may have become idle; after asking to
		// passivate too, in case the guardian finds it busy.
		next := a.cfg.PassivateAfter - time.Since(a.lastActive)
		if next <= 0 {
			if a.idle() {
				ctx.Send(ctx.Parent(), system.Passivate{ID: a.id})
			}
			next = a.cfg.PassivateAfter
		}
		a.stopIdle = a.cfg.Runtime.After(ctx.Self(), next, idleCheck[E, R]{by: a})
	case system.StopIfIdle:
		if a.idle() {
			ctx.Stop(ctx.Self())
		} else {
			ctx.Send(ctx.Parent(), system.StillBusy{ID: a.id})
		}
	case system.Deadlined:
		if a.b.Command(m.Msg) {
			a.enqueue(ctx, queued{msg: m.Msg, sender: ctx.Sender(), deadline: m.Deadline, res: m.Reservation})
		}
	default:
		if a.b.Command(m) {
			a.enqueue(ctx, queued{msg: m, sender: ctx.Sender()})
		}
	}
}

// reply answers sender, if there is one: some commands are told without
// waiting for an answer (what a node observed of a VM).
func reply(ctx actor.Context, sender *actor.PID, r any) {
	if sender != nil {
		ctx.Send(sender, r)
	}
}

func (a *loop[E, R]) idle() bool { return !a.busy && len(a.queue) == 0 }

func (a *loop[E, R]) enqueue(ctx actor.Context, q queued) {
	a.lastActive = time.Now()
	q.arrived = a.lastActive
	if len(a.queue) >= a.cfg.MaxQueue {
		reply(ctx, q.sender, a.b.Fail(a.cfg.Overloaded))
		return
	}
	a.queue = append(a.queue, q)
	if !a.loaded && !a.busy {
		if !a.b.Fresh(q.msg) || len(a.queue) > 1 {
			a.load(ctx)
			return
		}
		a.loaded = true
	}
	a.drain(ctx)
}

func (a *loop[E, R]) load(ctx actor.Context) {
	a.busy = true
	a.loaded = false
	b := a.b
	at := time.Now()
	a.cfg.Runtime.Go(ctx.Self(), func(c context.Context) any {
		e, err := b.Load(c)
		return loaded[E, R]{by: a, at: at, e: e, err: err}
	})
}

func (a *loop[E, R]) onLoaded(ctx actor.Context, m loaded[E, R]) {
	a.lastActive = time.Now()
	a.busy = false
	if m.err != nil && messages.KindOf(m.err) != messages.KindNotFound {
		// etcd cannot answer: tell the waiting callers now rather than let
		// them time out, and read again on the next command.
		a.cfg.Log.Warn("load "+a.cfg.Kind, a.cfg.IDKey, a.id, "err", m.err)
		for _, q := range a.queue {
			reply(ctx, q.sender, a.b.Fail(m.err))
		}
		a.queue = nil
		return
	}
	if m.err != nil {
		m.e = nil
	}
	a.state = m.e
	a.stateAt = m.at
	a.loaded = true
	a.b.Loaded(a.state)
	a.drain(ctx)
}

// drain plans queued commands until one starts a write.
func (a *loop[E, R]) drain(ctx actor.Context) {
	for !a.busy && len(a.queue) > 0 {
		q := a.queue[0]
		if !q.deadline.IsZero() && time.Now().After(q.deadline) {
			a.queue = a.queue[1:]
			continue
		}
		if a.stale(q) {
			// Read again; the commands queued so far are all answered
			// from that read, since it begins after each of them arrived.
			a.load(ctx)
			return
		}
		a.queue = a.queue[1:]
		a.handle(ctx, q)
	}
	// An actor for an id that does not exist (a lookup of a random id) is not
	// worth keeping until its idle time is up.
	if a.state == nil && a.idle() {
		ctx.Send(ctx.Parent(), system.Passivate{ID: a.id})
	}
}

// stale reports whether q must not be planned against the state held now
// (Config.MaxStale). A create is planned without reading: its transaction's
// guard refuses it should the entity exist.
func (a *loop[E, R]) stale(q queued) bool {
	if a.cfg.MaxStale < 0 || a.b.Fresh(q.msg) {
		return false
	}
	return a.stateAt.Before(q.arrived.Add(-a.cfg.MaxStale))
}

func (a *loop[E, R]) handle(ctx actor.Context, q queued) {
	p := a.b.Plan(a.state, q.msg)
	switch {
	case p.Err != nil:
		reply(ctx, q.sender, a.b.Fail(p.Err))
	case !p.writes():
		a.apply(p)
		reply(ctx, q.sender, a.answer(p))
	default:
		a.commit(ctx, q, p)
	}
}

// commit runs the plan's I/O off the actor goroutine; the outcome comes back
// as committed.
func (a *loop[E, R]) commit(ctx actor.Context, q queued, p Plan[E, R]) {
	a.busy = true
	st := a.cfg.Store
	a.cfg.Runtime.Go(ctx.Self(), func(c context.Context) any {
		c = store.WithReservation(c, q.res)
		var err error
		if p.Write != nil {
			if p, err = p.Write(c); err != nil {
				return committed[E, R]{by: a, q: q, err: err}
			}
		}
		if p.Txn != nil {
			err = st.Commit(c, p.Txn)
		}
		return committed[E, R]{by: a, q: q, p: p, err: err}
	})
}

func (a *loop[E, R]) onCommitted(ctx actor.Context, m committed[E, R]) {
	a.lastActive = time.Now()
	a.busy = false
	if m.err != nil {
		// A refused or failed write (another replica changed the row, a
		// guard failed, etcd hiccuped) may mean the state here is not etcd's:
		// read it again before the next command. A command refused because
		// the entity changed under it is planned again against what is there
		// now; any other failure is its answer.
		if messages.KindOf(m.err) == messages.KindStale && m.q.replans < MaxReplans {
			m.q.replans++
			a.queue = append([]queued{m.q}, a.queue...)
		} else {
			reply(ctx, m.q.sender, a.b.Fail(m.err))
		}
		a.load(ctx)
		return
	}
	// stateAt stays: not every commit compares the entity's own row (a
	// job's progress writes only its task), so the next command reads again.
	a.apply(m.p)
	reply(ctx, m.q.sender, a.answer(m.p))
	a.drain(ctx)
}

func (a *loop[E, R]) answer(p Plan[E, R]) R {
	if p.Answer != nil {
		return p.Answer(a.state)
	}
	return p.Reply
}

// apply makes a committed (or memory-only) plan the actor's state.
func (a *loop[E, R]) apply(p Plan[E, R]) {
	if p.Gone {
		a.state = nil
	} else if p.Next != nil {
		a.state = p.Next
	}
	if p.After != nil {
		p.After()
	}
}
