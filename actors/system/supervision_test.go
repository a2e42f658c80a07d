package system

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/internal/testutil"
)

func TestBackoffDelayDoublesAndCaps(t *testing.T) {
	b := &Backoff{Initial: 50 * time.Millisecond, Max: time.Second}
	cases := []struct {
		n    int
		want time.Duration
	}{
		{0, 50 * time.Millisecond},
		{1, 50 * time.Millisecond},
		{2, 100 * time.Millisecond},
		{3, 200 * time.Millisecond},
		{4, 400 * time.Millisecond},
		{5, 800 * time.Millisecond},
		{6, time.Second},
		{7, time.Second},
		{1000, time.Second},
	}
	for _, c := range cases {
		if got := b.Delay(c.n); got != c.want {
			t.Errorf("Delay(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	// An initial delay above the cap is capped too.
	if got := (&Backoff{Initial: 3 * time.Second, Max: time.Second}).Delay(1); got != time.Second {
		t.Errorf("Delay with initial above max = %v, want %v", got, time.Second)
	}
	d := DefaultBackoff(slog.Default())
	if got := d.Delay(100); got != d.Max {
		t.Errorf("default backoff Delay(100) = %v, want its max %v", got, d.Max)
	}
}

// crasher panics on "boom" and reports each incarnation's start.
type crasher struct{ started chan<- *actor.PID }

func (c *crasher) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		c.started <- ctx.Self()
	case string:
		panic("boom")
	}
}

// TestBackoffRestartsThenStops drives a supervised child with messages: it
// is restarted (a fresh instance, announced on the event stream) until it
// fails more than MaxFailures times within the window, then stopped.
func TestBackoffRestartsThenStops(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	t.Cleanup(sys.Shutdown)
	events := make(chan *actor.SupervisorEvent, 16)
	sub := sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.SupervisorEvent); ok {
			events <- e
		}
	})
	t.Cleanup(func() { sys.EventStream.Unsubscribe(sub) })

	started := make(chan *actor.PID, 16)
	strategy := &Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, MaxFailures: 2, Window: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	parent := actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return &crasher{started: started} }))
		}
	}, actor.WithSupervisor(strategy))
	sys.Root.Spawn(parent)

	wait := func(what string) *actor.PID {
		t.Helper()
		select {
		case pid := <-started:
			return pid
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: child did not start", what)
		}
		return nil
	}
	child := wait("first start")
	want := []actor.Directive{actor.RestartDirective, actor.RestartDirective, actor.StopDirective}
	for i, directive := range want {
		sys.Root.Send(child, "boom")
		select {
		case e := <-events:
			if e.Directive != directive || !e.Child.Equal(child) {
				t.Fatalf("failure %d: event %v for %v, want %v for %v", i+1, e.Directive, e.Child, directive, child)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("failure %d: no supervisor event", i+1)
		}
		if directive == actor.RestartDirective {
			wait("restart")
		}
	}
	if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool { _, alive := sys.ProcessRegistry.Get(child); return !alive }) {
		t.Fatal("child still runs after the stop directive")
	}
	select {
	case <-started:
		t.Fatal("child restarted after the stop directive")
	default:
	}
}
