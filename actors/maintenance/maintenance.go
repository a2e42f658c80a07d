// Package maintenance holds the control plane's periodic loops as actors with
// timers: cleanup of finished tasks, stale idempotency records and orphaned
// jobs, etcd snapshots with retention, and the store's space (storage.go). Each loop runs its I/O off the
// actor and skips a tick while the previous one is still running. Stopping a
// loop's actor ends its timer and its run's context, and waits for the run to
// return: a loop whose replica lost the loops' ownership (persistence/election)
// has stopped running once its actor has stopped.
package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/persistence/store"
)

// Tick asks a loop to run now; timers send it, and tests may too.
type Tick struct{}

// Ran reports that one run of a loop ended.
type Ran struct {
	Loop string
	Err  error
}

// Loop is one periodic job.
type Loop struct {
	Name     string
	Interval time.Duration
	Run      func(ctx context.Context) error
	// Immediate runs the loop once as soon as it starts, not only after
	// its first interval (the storage loop: a full store is seen at boot).
	Immediate bool
	// OnRun, if set, hears each Ran (tests use it to wait for a run).
	OnRun func(Ran)
}

// Props returns the props of an actor that runs loop on its interval.
func Props(rt *system.Runtime, log *slog.Logger, loop Loop) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &loopActor{rt: rt, log: log, loop: loop} })
}

type loopActor struct {
	rt      *system.Runtime
	log     *slog.Logger
	loop    Loop
	running bool
	// life ends when the actor stops; timers and runs hang off it.
	life context.Context
	end  context.CancelFunc
	// ran is closed when the run under way returns.
	ran chan struct{}
}

// stopWait bounds how long a stopping loop waits for its run to return.
const stopWait = 30 * time.Second

type finished struct {
	by  *loopActor
	err error
}

func (a *loopActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.life, a.end = context.WithCancel(a.rt.Context())
		if a.loop.Interval > 0 {
			a.rt.Every(a.life, ctx.Self(), a.loop.Interval, Tick{})
		}
		if a.loop.Immediate {
			ctx.Send(ctx.Self(), Tick{})
		}
	case Tick:
		if a.running {
			return
		}
		a.running = true
		run, life, ran := a.loop.Run, a.life, make(chan struct{})
		a.ran = ran
		a.rt.Go(ctx.Self(), func(context.Context) any {
			defer close(ran)
			return finished{by: a, err: run(life)}
		})
	case *actor.Stopping, *actor.Restarting:
		if a.end == nil {
			return
		}
		a.end()
		if a.running {
			select {
			case <-a.ran:
			case <-time.After(stopWait):
				a.log.Warn("maintenance loop still running after its stop", "loop", a.loop.Name)
			}
		}
	case finished:
		if m.by != a {
			return
		}
		a.running = false
		if m.err != nil {
			a.log.Warn("maintenance loop failed", "loop", a.loop.Name, "err", m.err)
		}
		if a.loop.OnRun != nil {
			a.loop.OnRun(Ran{Loop: a.loop.Name, Err: m.err})
		}
	case system.Crashed:
		panic(m.Reason)
	}
}

// Cleanup removes finished tasks past retention, idempotency records past
// theirs, and jobs whose task has ended.
func Cleanup(st *store.Store, log *slog.Logger, taskRetention, idemRetention time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		tasks, err := st.SweepFinishedTasks(ctx, taskRetention)
		if err != nil {
			return err
		}
		idem, err := st.SweepIdempotency(ctx, idemRetention)
		if err != nil {
			return err
		}
		jobs, err := st.SweepOrphanJobs(ctx)
		if err != nil {
			return err
		}
		if tasks+idem+jobs > 0 {
			log.Info("cleanup", "tasks", tasks, "idempotency_records", idem, "orphan_jobs", jobs)
		}
		return nil
	}
}

// Snapshotter writes a snapshot into dir; persistence/etcd.Member.Snapshot is one.
type Snapshotter func(ctx context.Context, dir string, now time.Time) (string, error)

// Backup takes a snapshot and keeps the newest keep of them.
func Backup(snap Snapshotter, prune func(dir string, keep int) ([]string, error), dir string, keep int, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		path, err := snap(ctx, dir, time.Now())
		if err != nil {
			return err
		}
		removed, err := prune(dir, keep)
		log.Info("snapshot taken", "path", path, "pruned", len(removed))
		return err
	}
}
