package system

import (
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Backoff restarts a failed child after an exponentially growing delay and
// stops it after too many failures within a window. protoactor's own
// "exponential" strategy grows linearly and never gives up; an entity actor
// that keeps failing (etcd gone, a corrupt row) should stop and be spawned
// afresh by the next message instead of spinning.
type Backoff struct {
	Initial     time.Duration
	Max         time.Duration
	MaxFailures int
	Window      time.Duration
	Log         *slog.Logger
}

var _ actor.SupervisorStrategy = (*Backoff)(nil)

// DefaultBackoff is the strategy guardians use for their children.
func DefaultBackoff(log *slog.Logger) *Backoff {
	return &Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second, MaxFailures: 8, Window: time.Minute, Log: log}
}

// HandleFailure implements actor.SupervisorStrategy.
func (b *Backoff) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, _ any) {
	if rs.NumberOfFailures(b.Window) == 0 {
		rs.Reset()
	}
	rs.Fail()
	n := rs.FailureCount()
	if n > b.MaxFailures {
		b.Log.Error("actor keeps failing; stopping it", "actor", child.Id, "failures", n, "reason", reason)
		sys.EventStream.Publish(&actor.SupervisorEvent{Child: child, Reason: reason, Directive: actor.StopDirective})
		sup.StopChildren(child)
		return
	}
	delay := b.Delay(n)
	b.Log.Warn("actor failed; restarting", "actor", child.Id, "failure", n, "after", delay, "reason", reason)
	// Published so operators' metrics and tests can see restarts happen.
	sys.EventStream.Publish(&actor.SupervisorEvent{Child: child, Reason: reason, Directive: actor.RestartDirective})
	time.AfterFunc(delay, func() { sup.RestartChildren(child) })
}

// Delay is the wait before the nth restart.
func (b *Backoff) Delay(n int) time.Duration {
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}
