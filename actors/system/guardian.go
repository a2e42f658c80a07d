package system

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/persistence/store"
)

// Deliver routes Msg to the entity actor for ID, spawning it if it is not
// running. The entity sees the original sender, so it can answer a future.
type Deliver struct {
	ID  string
	Msg any
}

// Deadlined carries a command whose caller stops waiting at Deadline. An
// entity drops it if it is still queued then, so a command the caller gave up
// on (and may retry) does not run later behind its back.
type Deadlined struct {
	Msg      any
	Deadline time.Time
	// Reservation, when set, is the Idempotency-Key reservation of the
	// request the command serves: the entity commits the command's change
	// under it (store.WithReservation).
	Reservation *store.Reservation
}

// Passivate is sent by an idle entity to its guardian to ask to be stopped.
type Passivate struct{ ID string }

// StopIfIdle is the guardian's answer to Passivate: messages that reached the
// guardian before it are already in the entity's mailbox, and later ones are
// held back, so the entity can stop safely if it is still idle.
type StopIfIdle struct{}

// StillBusy tells the guardian that the entity got work after asking to
// passivate; the guardian releases what it held back.
type StillBusy struct{ ID string }

// EntityProducer makes the props of the entity actor for one id.
type EntityProducer func(id string) *actor.Props

// NewGuardian returns props of a guardian that keeps one child per id.
// onStart, if set, runs when the guardian starts (to spawn fixed children).
func NewGuardian(rt *Runtime, prefix string, produce EntityProducer, onStart func(actor.Context)) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &guardian{rt: rt, prefix: prefix, produce: produce, onStart: onStart,
			children: map[string]*actor.PID{}, byPID: map[string]string{}, held: map[string][]held{}}
	}, actor.WithSupervisor(DefaultBackoff(rt.Log)))
}

type guardian struct {
	rt       *Runtime
	prefix   string
	produce  EntityProducer
	onStart  func(actor.Context)
	children map[string]*actor.PID
	byPID    map[string]string
	// held maps an entity being passivated to the messages that arrived meanwhile.
	held map[string][]held
}

type held struct {
	msg    any
	sender *actor.PID
}

func (g *guardian) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if g.onStart != nil {
			g.onStart(ctx)
		}
	case Deliver:
		if q, stopping := g.held[m.ID]; stopping {
			g.held[m.ID] = append(q, held{m.Msg, ctx.Sender()})
			return
		}
		pid := g.child(ctx, m.ID)
		ctx.RequestWithCustomSender(pid, m.Msg, ctx.Sender())
	case Passivate:
		pid, ok := g.children[m.ID]
		if !ok {
			return
		}
		if _, stopping := g.held[m.ID]; !stopping {
			g.held[m.ID] = nil
			ctx.Send(pid, StopIfIdle{})
		}
	case StillBusy:
		g.release(ctx, m.ID)
	case *actor.Terminated:
		id, ok := g.byPID[m.Who.Id]
		if !ok {
			return
		}
		delete(g.byPID, m.Who.Id)
		delete(g.children, id)
		g.release(ctx, id)
	}
}

func (g *guardian) child(ctx actor.Context, id string) *actor.PID {
	if pid, ok := g.children[id]; ok {
		return pid
	}
	pid, err := ctx.SpawnNamed(g.produce(id), g.prefix+"-"+id)
	if err != nil && pid == nil {
		panic(err)
	}
	g.children[id] = pid
	g.byPID[pid.Id] = id
	return pid
}

// release forwards what was held back during a passivation attempt; if the
// entity has stopped meanwhile, a fresh one is spawned for it.
func (g *guardian) release(ctx actor.Context, id string) {
	q, ok := g.held[id]
	if !ok {
		return
	}
	delete(g.held, id)
	if len(q) == 0 {
		return
	}
	pid := g.child(ctx, id)
	for _, h := range q {
		ctx.RequestWithCustomSender(pid, h.msg, h.sender)
	}
}
