// Package system holds the control plane's actor runtime: the protoactor
// system, its supervision strategy, the entity guardians that spawn one actor
// per id on demand and passivate idle ones, and the goroutine owner that
// entity actors hand their slow I/O to.
package system

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Runtime owns the actor system and every goroutine actors start for I/O, so
// Stop can end them all and wait for them.
type Runtime struct {
	System *actor.ActorSystem
	Log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRuntime starts an actor system whose own logging goes to log at warn level.
func NewRuntime(log *slog.Logger) *Runtime {
	ctx, cancel := context.WithCancel(context.Background())
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return quiet(log)
	}))
	return &Runtime{System: sys, Log: log, ctx: ctx, cancel: cancel}
}

// quiet drops protoactor's info-level chatter (every spawn and stop).
func quiet(log *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{log.Handler(), slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

// Go runs slow work off the actor's goroutine and sends its result back to
// self as a message (unless self is nil), so Receive never blocks on I/O. A panic in the work is
// recovered and delivered as a Crashed message for the actor to escalate.
func (r *Runtime) Go(self *actor.PID, work func(ctx context.Context) any) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var result any
		func() {
			defer func() {
				if p := recover(); p != nil {
					result = Crashed{Reason: fmt.Sprintf("%v\n%s", p, debug.Stack())}
				}
			}()
			result = work(r.ctx)
		}()
		if self != nil && result != nil && r.ctx.Err() == nil {
			r.System.Root.Send(self, result)
		}
	}()
}

// Every sends msg to pid at each interval until ctx (or the runtime) ends.
func (r *Runtime) Every(ctx context.Context, pid *actor.PID, interval time.Duration, msg any) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-r.ctx.Done():
				return
			case <-ctx.Done():
				return
			case <-t.C:
				r.System.Root.Send(pid, msg)
			}
		}
	}()
}

// After sends msg to pid once after d, unless the runtime stops first or
// the returned cancel is called. It holds no goroutine while it waits
// (entity actors keep one idle timer each, and there can be very many of
// them); a timer that fires after Stop sends nothing. An actor that stops
// before its timer fires should cancel it: a pending timer stays in the Go
// runtime's timer heap, and 200,000 of them (VM actors spawned for ids that
// do not exist, waiting out their idle time) made the scheduler's timer
// bookkeeping a sixth of the control plane's CPU at 10,000 nodes.
func (r *Runtime) After(pid *actor.PID, d time.Duration, msg any) (cancel func()) {
	t := time.AfterFunc(d, func() {
		if r.ctx.Err() == nil {
			r.System.Root.Send(pid, msg)
		}
	})
	return func() { t.Stop() }
}

// Context is cancelled when the runtime stops.
func (r *Runtime) Context() context.Context { return r.ctx }

// Stop cancels outstanding work, waits for its goroutines and shuts the
// actor system down.
func (r *Runtime) Stop() {
	r.cancel()
	r.wg.Wait()
	r.System.Shutdown()
}

// Crashed reports a panic in work an actor started with Go. The actor should
// panic with it so its supervisor restarts it.
type Crashed struct{ Reason string }
