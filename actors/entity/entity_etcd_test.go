//go:build etcd

package entity_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/entity"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

// The loop is driven with a small behaviour over real node rows: get answers
// the node, setVersion writes its agent version.
type (
	get        struct{}
	setVersion struct {
		v string
		// gated commits only once the test closes the harness's gate.
		gated bool
		// stale writes at a revision that is never current.
		stale bool
	}
	answer struct {
		n   *messages.Node
		err error
	}
)

// probe asks the parent to send StopIfIdle to the entity: its answer
// (StillBusy, or the entity stopping) comes after every command sent before.
type probe struct{}

// forward asks the parent to hand msg to the entity.
type forward struct{ msg any }

// parent stands where a guardian stands. It sends the commands itself, so
// everything the entity sends back (answers, Passivate, StillBusy) reaches
// the test in the order the entity sent it; and it stops an idle entity when
// asked to passivate, as the guardian does.
type parent struct {
	props  *actor.Props
	child  *actor.PID
	events chan any
}

func (p *parent) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.child = ctx.Spawn(p.props)
	case forward:
		if p.child == nil {
			p.child = ctx.Spawn(p.props) // the previous one passivated
		}
		ctx.Request(p.child, m.msg)
	case probe:
		ctx.Send(p.child, system.StopIfIdle{})
	case system.Passivate:
		p.events <- m
		ctx.Send(p.child, system.StopIfIdle{})
	case answer, system.StillBusy:
		p.events <- m
	case *actor.Terminated:
		if p.child != nil && m.Who.Equal(p.child) {
			p.child = nil
		}
		p.events <- m
	}
}

type harness struct {
	t      *testing.T
	st     *store.Store
	rt     *system.Runtime
	parent *actor.PID
	events chan any
	id     string

	gate    chan struct{}
	started chan string
	// plans and loads count calls across incarnations; seen is the agent
	// version each setVersion was planned against, in order.
	plans, loads, made atomic.Int64
	mu                 sync.Mutex
	seen               []string
}

// start runs one entity actor for a node row that exists unless absent. It
// trusts its state between commands (MaxStale -1), as the node actor does.
func start(t *testing.T, passivateAfter time.Duration, maxQueue int, absent bool) *harness {
	t.Helper()
	return startStale(t, passivateAfter, maxQueue, absent, -1)
}

// startStale is start with Config.MaxStale set.
func startStale(t *testing.T, passivateAfter time.Duration, maxQueue int, absent bool, maxStale time.Duration) *harness {
	t.Helper()
	st := storetest.New(t)
	h := &harness{t: t, st: st, id: messages.NewID(), gate: make(chan struct{}), started: make(chan string, 8),
		events: make(chan any, 16)}
	if !absent {
		n := &messages.Node{ID: h.id, Name: "n1", Phase: messages.NodePending, AgentVersion: "0"}
		if err := st.Commit(t.Context(), store.CreateNode(store.NewTxn(), n)); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	h.rt = system.NewRuntime(log)
	t.Cleanup(func() {
		select {
		case <-h.gate:
		default:
			close(h.gate)
		}
		h.rt.Stop()
	})
	cfg := entity.Config{Runtime: h.rt, Store: st, Log: log, Kind: "node", IDKey: "node_id",
		PassivateAfter: passivateAfter, MaxQueue: maxQueue, MaxStale: maxStale,
		Overloaded: messages.Errorf(messages.KindUnavailable, "test_overloaded", "overloaded")}
	props := entity.Props(cfg, h.id, func() entity.Behaviour[messages.Node, answer] {
		h.made.Add(1)
		return &behaviour{h: h}
	})
	h.parent = h.rt.System.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &parent{props: props, events: h.events}
	}))
	return h
}

type behaviour struct{ h *harness }

func (b *behaviour) Load(c context.Context) (*messages.Node, error) {
	b.h.loads.Add(1)
	return b.h.st.GetNode(c, b.h.id)
}

func (b *behaviour) Loaded(*messages.Node) {}

func (b *behaviour) Command(msg any) bool {
	switch msg.(type) {
	case get, setVersion:
		return true
	}
	return false
}

func (b *behaviour) Fresh(any) bool { return false }

func (b *behaviour) Fail(err error) answer { return answer{err: err} }

func view(n *messages.Node) answer {
	if n == nil {
		return answer{}
	}
	c := *n
	return answer{n: &c}
}

func (b *behaviour) Plan(cur *messages.Node, cmd any) entity.Plan[messages.Node, answer] {
	h := b.h
	h.plans.Add(1)
	if cur == nil {
		return entity.Plan[messages.Node, answer]{Err: messages.NotFound("node", h.id)}
	}
	m, ok := cmd.(setVersion)
	if !ok {
		return entity.Plan[messages.Node, answer]{Answer: view}
	}
	h.mu.Lock()
	h.seen = append(h.seen, cur.AgentVersion)
	h.mu.Unlock()
	next := *cur
	next.AgentVersion = m.v
	if m.stale {
		next.Revision = 1
	}
	if !m.gated {
		return entity.Plan[messages.Node, answer]{Txn: store.UpdateNode(store.NewTxn(), &next), Next: &next, Answer: view}
	}
	st := h.st
	return entity.Plan[messages.Node, answer]{Write: func(c context.Context) (entity.Plan[messages.Node, answer], error) {
		h.started <- m.v
		<-h.gate
		if err := st.Commit(c, store.UpdateNode(store.NewTxn(), &next)); err != nil {
			return entity.Plan[messages.Node, answer]{}, err
		}
		return entity.Plan[messages.Node, answer]{Next: &next, Answer: view}, nil
	}}
}

func (h *harness) send(msg any) { h.rt.System.Root.Send(h.parent, forward{msg: msg}) }

// answer waits for the entity's next message, which must be an answer.
func (h *harness) answer() answer {
	h.t.Helper()
	e := h.event(10 * time.Second)
	a, ok := e.(answer)
	if !ok {
		h.t.Fatalf("got %#v, want an answer", e)
	}
	return a
}

func (h *harness) ask(msg any) answer {
	h.t.Helper()
	h.send(msg)
	return h.answer()
}

// event waits for the next thing the entity asked of its parent.
func (h *harness) event(within time.Duration) any {
	h.t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(within):
		h.t.Fatalf("no event from the entity within %v", within)
		return nil
	}
}

// stillBusy proves every command sent before it has reached the entity and
// that the entity is busy.
func (h *harness) stillBusy() {
	h.t.Helper()
	h.rt.System.Root.Send(h.parent, probe{})
	if e := h.event(10 * time.Second); e != (system.StillBusy{ID: h.id}) {
		h.t.Fatalf("probe answered %#v, want StillBusy", e)
	}
}

func (h *harness) row() *messages.Node {
	h.t.Helper()
	n, err := h.st.GetNode(h.t.Context(), h.id)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// TestCommandsQueueWhileBusy: commands that arrive during a write wait,
// unplanned, and are planned in order against the state the write left; no
// answer goes out before its commit is in etcd.
func TestCommandsQueueWhileBusy(t *testing.T) {
	h := start(t, time.Minute, 16, false)
	h.send(setVersion{v: "a", gated: true})
	if v := <-h.started; v != "a" {
		t.Fatalf("write started for %q", v)
	}
	h.send(setVersion{v: "b"})
	h.send(get{})
	// Answers and StillBusy travel the same way, in order: nothing was
	// answered before the probe, and the two later commands wait unplanned.
	h.stillBusy()
	if n := h.plans.Load(); n != 1 {
		t.Fatalf("%d plans while the first write is in flight, want 1", n)
	}
	close(h.gate)
	a := h.answer()
	if a.err != nil || a.n.AgentVersion != "a" {
		t.Fatalf("first: %+v", a)
	}
	b := h.answer()
	if b.err != nil || b.n.AgentVersion != "b" || b.n.Revision <= a.n.Revision {
		t.Fatalf("second: %+v after %+v", b.n, a.n)
	}
	if g := h.answer(); g.err != nil || g.n.AgentVersion != "b" || g.n.Revision != b.n.Revision {
		t.Fatalf("get: %+v", g)
	}
	h.mu.Lock()
	seen := append([]string(nil), h.seen...)
	h.mu.Unlock()
	if len(seen) != 2 || seen[0] != "0" || seen[1] != "a" {
		t.Fatalf("setVersion planned against %q, want [0 a]", seen)
	}
	if row := h.row(); row.AgentVersion != "b" || row.Revision != b.n.Revision {
		t.Fatalf("row %q at %d, answered revision %d", row.AgentVersion, row.Revision, b.n.Revision)
	}
	if n := h.loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1: the entity is read once and then held", n)
	}
}

// TestQueueBoundAndDeadline: a command beyond the queue's bound is refused at
// once; a command whose caller's deadline passed while it waited is dropped
// unplanned.
func TestQueueBoundAndDeadline(t *testing.T) {
	h := start(t, time.Minute, 2, false)
	h.send(setVersion{v: "a", gated: true})
	<-h.started
	deadline := time.Now().Add(50 * time.Millisecond)
	h.send(system.Deadlined{Msg: setVersion{v: "late"}, Deadline: deadline})
	h.send(get{})
	h.send(get{}) // the third waiting: over the bound of 2
	if a := h.answer(); messages.KindOf(a.err) != messages.KindUnavailable {
		t.Fatalf("over the bound: %+v", a)
	}
	for time.Now().Before(deadline.Add(time.Millisecond)) {
		time.Sleep(time.Millisecond) // the clock must pass the deadline; not synchronization
	}
	close(h.gate)
	if a := h.answer(); a.err != nil || a.n.AgentVersion != "a" {
		t.Fatalf("first: %+v", a)
	}
	if g := h.answer(); g.err != nil || g.n.AgentVersion != "a" {
		t.Fatalf("get after the dropped command: %+v", g)
	}
	if n := h.plans.Load(); n != 2 {
		t.Fatalf("%d plans, want 2: the late command must not be planned", n)
	}
}

// TestConflictReplans: a write refused because another writer changed the
// row makes the loop read the row again and plan the same command against
// it; one that keeps conflicting is answered with the conflict after
// MaxReplans more plans.
func TestConflictReplans(t *testing.T) {
	h := start(t, time.Minute, 16, false)
	if g := h.ask(get{}); g.err != nil {
		t.Fatal(g.err)
	}
	// Another replica cordons the node behind the actor's back.
	other := h.row()
	other.Cordoned = true
	if err := h.st.Commit(t.Context(), store.UpdateNode(store.NewTxn(), other)); err != nil {
		t.Fatal(err)
	}
	plans := h.plans.Load()
	a := h.ask(setVersion{v: "x"})
	if a.err != nil || a.n.AgentVersion != "x" || !a.n.Cordoned {
		t.Fatalf("after a conflict: %+v", a)
	}
	if n := h.plans.Load() - plans; n != 2 {
		t.Fatalf("%d plans for the command, want 2 (one stale, one fresh)", n)
	}
	if row := h.row(); row.AgentVersion != "x" || !row.Cordoned {
		t.Fatalf("row %+v lost a write", row)
	}
	plans = h.plans.Load()
	if a := h.ask(setVersion{v: "never", stale: true}); messages.KindOf(a.err) != messages.KindStale {
		t.Fatalf("always stale: %+v", a)
	}
	if n := h.plans.Load() - plans; n != entity.MaxReplans+1 {
		t.Fatalf("%d plans for an always-stale command, want %d", n, entity.MaxReplans+1)
	}
	if g := h.ask(get{}); g.err != nil || g.n.AgentVersion != "x" {
		t.Fatalf("after giving up: %+v", g)
	}
}

// TestPassivation: an idle actor asks its parent to stop it once
// PassivateAfter has passed since its last command, and the next command
// reads the entity afresh in a new incarnation; a busy one refuses to stop;
// an actor whose entity does not exist asks to stop as soon as it answered.
func TestPassivation(t *testing.T) {
	const after = 200 * time.Millisecond
	h := start(t, after, 16, false)
	h.send(setVersion{v: "a", gated: true})
	<-h.started
	h.stillBusy()
	released := time.Now() // the actor's last activity is after this
	close(h.gate)
	h.answer()
	if e := h.event(10 * time.Second); e != (system.Passivate{ID: h.id}) {
		t.Fatalf("got %#v, want Passivate", e)
	}
	if idle := time.Since(released); idle < after {
		t.Fatalf("asked to passivate %v after its last activity, want at least %v", idle, after)
	}
	if _, ok := h.event(10 * time.Second).(*actor.Terminated); !ok {
		t.Fatal("the idle entity did not stop")
	}
	if g := h.ask(get{}); g.err != nil || g.n.AgentVersion != "a" {
		t.Fatalf("after passivation: %+v", g)
	}
	if m, l := h.made.Load(), h.loads.Load(); m != 2 || l != 2 {
		t.Fatalf("%d incarnations and %d loads, want 2 and 2", m, l)
	}

	missing := start(t, time.Minute, 16, true)
	if a := missing.ask(get{}); messages.KindOf(a.err) != messages.KindNotFound {
		t.Fatalf("missing entity: %+v", a)
	}
	if e := missing.event(10 * time.Second); e != (system.Passivate{ID: missing.id}) {
		t.Fatalf("got %#v, want Passivate at once", e)
	}
}

// TestStaleStateReadAgain: with MaxStale 0, another replica's write behind
// the actor's back is seen by the next command, a read as much as a write;
// the commands that queued behind a write are all answered from one read
// that began after they arrived. With MaxStale -1 (the node actor's, and
// every entity's before) the second get answers the row as it was.
func TestStaleStateReadAgain(t *testing.T) {
	for _, c := range []struct {
		name     string
		maxStale time.Duration
		fresh    bool
	}{{"linearizable", 0, true}, {"cached", -1, false}} {
		t.Run(c.name, func(t *testing.T) {
			h := startStale(t, time.Minute, 16, false, c.maxStale)
			if g := h.ask(get{}); g.err != nil || g.n.AgentVersion != "0" {
				t.Fatalf("first get: %+v", g)
			}
			// Another replica writes the row.
			other := h.row()
			other.AgentVersion = "other"
			if err := h.st.Commit(t.Context(), store.UpdateNode(store.NewTxn(), other)); err != nil {
				t.Fatal(err)
			}
			g := h.ask(get{})
			if got := g.err == nil && g.n.AgentVersion == "other"; got != c.fresh {
				t.Fatalf("get after another replica's write: version %q (fresh %v, want %v)", g.n.AgentVersion, got, c.fresh)
			}
			if !c.fresh {
				return
			}
			loads := h.loads.Load()
			h.send(setVersion{v: "a", gated: true})
			<-h.started
			h.send(get{})
			h.send(get{})
			h.send(get{})
			h.stillBusy()
			// The row moves again while the write is in flight: the write
			// conflicts and is planned again, and the gets after it see both.
			other = h.row()
			other.Cordoned = true
			if err := h.st.Commit(t.Context(), store.UpdateNode(store.NewTxn(), other)); err != nil {
				t.Fatal(err)
			}
			close(h.gate)
			if a := h.answer(); a.err != nil || a.n.AgentVersion != "a" || !a.n.Cordoned {
				t.Fatalf("write after a conflict: %+v", a.n)
			}
			for i := range 3 {
				if g := h.answer(); g.err != nil || g.n.AgentVersion != "a" || !g.n.Cordoned {
					t.Fatalf("queued get %d: %+v", i, g.n)
				}
			}
			// One read before the write (its state was stale), one after
			// its conflict; that read began after the gets arrived, so it
			// and the replanned write's compare-and-set answer them too.
			if n := h.loads.Load() - loads; n != 2 {
				t.Fatalf("%d loads for a write and three queued gets, want 2", n)
			}
		})
	}
}
