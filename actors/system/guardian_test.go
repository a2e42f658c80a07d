package system

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// entity is a fake entity actor. It answers "ping" with its id and
// incarnation, asks to passivate on "passivate", and on StopIfIdle reports
// to the test and waits for the test's verdict: stop, or stay busy.
type entity struct {
	id       string
	n        int64
	stopping chan<- string
	verdict  <-chan bool
}

func (e *entity) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case string:
		switch ctx.Message().(string) {
		case "ping":
			ctx.Respond(fmt.Sprintf("%s#%d", e.id, e.n))
		case "passivate":
			ctx.Send(ctx.Parent(), Passivate{ID: e.id})
		}
	case StopIfIdle:
		e.stopping <- e.id
		// Blocking here is the test's way to hold the entity between the
		// guardian's StopIfIdle and the entity's answer.
		if <-e.verdict {
			ctx.Stop(ctx.Self())
		} else {
			ctx.Send(ctx.Parent(), StillBusy{ID: e.id})
		}
	}
}

func startGuardian(t *testing.T) (rt *Runtime, guardian *actor.PID, stopping <-chan string, verdict chan<- bool) {
	t.Helper()
	rt = NewRuntime(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(rt.Stop)
	var incarnations atomic.Int64
	stop := make(chan string, 4)
	decide := make(chan bool, 4)
	props := NewGuardian(rt, "e", func(id string) *actor.Props {
		return actor.PropsFromProducer(func() actor.Actor {
			return &entity{id: id, n: incarnations.Add(1), stopping: stop, verdict: decide}
		})
	}, nil)
	pid, err := rt.System.Root.SpawnNamed(props, "entities")
	if err != nil {
		t.Fatal(err)
	}
	return rt, pid, stop, decide
}

func ask(t *testing.T, rt *Runtime, guardian *actor.PID, id string) string {
	t.Helper()
	res, err := rt.System.Root.RequestFuture(guardian, Deliver{ID: id, Msg: "ping"}, 5*time.Second).Result()
	if err != nil {
		t.Fatalf("ping %s: %v", id, err)
	}
	return res.(string)
}

func TestGuardianSpawnsOnePerID(t *testing.T) {
	rt, g, _, _ := startGuardian(t)
	a1 := ask(t, rt, g, "a")
	b1 := ask(t, rt, g, "b")
	a2 := ask(t, rt, g, "a")
	if a1 != a2 || a1 == b1 || a1[:2] != "a#" || b1[:2] != "b#" {
		t.Fatalf("answers a=%s,%s b=%s: want one actor per id, reused", a1, a2, b1)
	}
	if _, ok := rt.System.ProcessRegistry.GetLocal("entities/e-a"); !ok {
		t.Error("entity a is not named e-a under its guardian")
	}
}

// A message that reaches the guardian while an entity is passivating is held
// back and delivered to a fresh incarnation once the old one has stopped.
func TestGuardianHoldsMessagesDuringPassivation(t *testing.T) {
	rt, g, stopping, verdict := startGuardian(t)
	first := ask(t, rt, g, "a")
	rt.System.Root.Send(g, Deliver{ID: "a", Msg: "passivate"})
	select {
	case <-stopping:
	case <-time.After(5 * time.Second):
		t.Fatal("guardian did not ask the entity to stop")
	}
	fut := rt.System.Root.RequestFuture(g, Deliver{ID: "a", Msg: "ping"}, 5*time.Second)
	// The guardian handles Deliver in order: once b answers, a's ping has
	// reached the guardian during the passivation and is being held.
	ask(t, rt, g, "b")
	verdict <- true
	res, err := fut.Result()
	if err != nil {
		t.Fatalf("message held during passivation was lost: %v", err)
	}
	if res == first {
		t.Fatalf("held message answered by the stopped incarnation %s", first)
	}
	if again := ask(t, rt, g, "a"); again != res {
		t.Fatalf("after passivation: %s then %s, want the same fresh incarnation", res, again)
	}
}

// An entity that got work after asking to passivate stays, and what the
// guardian held back reaches that same incarnation.
func TestGuardianReleasesWhenStillBusy(t *testing.T) {
	rt, g, stopping, verdict := startGuardian(t)
	first := ask(t, rt, g, "a")
	rt.System.Root.Send(g, Deliver{ID: "a", Msg: "passivate"})
	select {
	case <-stopping:
	case <-time.After(5 * time.Second):
		t.Fatal("guardian did not ask the entity to stop")
	}
	fut := rt.System.Root.RequestFuture(g, Deliver{ID: "a", Msg: "ping"}, 5*time.Second)
	// The guardian handles Deliver in order: once b answers, a's ping has
	// reached the guardian during the passivation and is being held.
	ask(t, rt, g, "b")
	verdict <- false
	res, err := fut.Result()
	if err != nil {
		t.Fatalf("message held during passivation was lost: %v", err)
	}
	if res != first {
		t.Fatalf("answered by %s, want the still-busy incarnation %s", res, first)
	}
}
