package vmactor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// Messages of a VM actor. Tasks and sync operations are queued and run one at
// a time; everything slow runs off the actor and comes back as opDone.
type (
	runTask struct {
		id  string
		req messages.AgentTaskRequest
	}
	runSync struct {
		op    string
		reply chan syncResult
	}
	syncResult struct {
		vm  *messages.VMObserved
		err error
	}
	loaded struct {
		st  vmState
		err error
	}
	opDone struct {
		st  vmState
		err error
	}
	exited struct{ proc *qemu.Process }
	// fromGo is what a goroutine of an actor incarnation sends back: the
	// incarnation that receives it takes it only if it started it.
	fromGo struct {
		from *vmActor
		msg  any
	}
	// qmpEvent (events.go) carries a QMP event.
)

// Operations run only by the actor itself or synchronously for the API.
const (
	opPause       = "pause"
	opResume      = "resume"
	opObserveExit = "observe-exit"
)

// vmState is the VM as one operation found or left it. An operation gets a
// copy and returns the next one; the actor swaps it in, so nothing is shared
// between the actor and a running operation except the handles, which are
// safe for concurrent use.
type vmState struct {
	rec  *record
	proc *qemu.Process
	mon  *qemu.Monitor
	log  *qemu.SerialLog
	// hub owns the serial socket while QEMU runs: it writes log and serves
	// console sessions. nil when QEMU is not running (or its serial socket
	// could not be reached after a re-adoption).
	hub *console.Hub
}

// work is one queued item: a task, or a sync operation with its reply.
type work struct {
	taskID string
	req    messages.AgentTaskRequest
	op     string
	reply  chan syncResult
	// obs is what QEMU's events said, for opEvent and opObserveExit.
	obs *observation
}

func (w *work) name() string {
	if w.taskID != "" {
		return w.req.Kind
	}
	return w.op
}

type vmActor struct {
	m        *Manager
	id       string
	st       vmState
	ready    bool
	busy     bool
	current  *work
	queue    []*work
	watching *qemu.Process
	ctx      context.Context
	cancel   context.CancelFunc
	// g owns this incarnation's goroutines (its operation, the QMP event
	// drain and the exit watcher); the manager's group owns them too.
	g  group
	ev eventState   // events.go
	mx metricsState // metrics.go
}

func newVMActor(m *Manager, id string) *vmActor { return &vmActor{m: m, id: id} }

func (a *vmActor) Receive(ctx actor.Context) {
	defer a.logPanic()
	msg := ctx.Message()
	if r, ok := msg.(fromGo); ok {
		if r.from != a {
			// A result of the incarnation this one replaced.
			discard(r.msg)
			return
		}
		msg = r.msg
	}
	switch msg := msg.(type) {
	case *actor.Started:
		a.ctx, a.cancel = context.WithCancel(context.Background())
		a.busy = true
		a.goRun(ctx, func(c context.Context) any { return a.load(c) })
	case *actor.Restarting:
		// The supervisor restarts this actor after a panic: the operation
		// under way ends first, so the next incarnation never loads the
		// VM while this one still changes it.
		a.end(true, messages.Errorf(messages.KindInternal, "agent_internal",
			"the agent's actor for vm %s crashed and restarted; retry", a.id))
	case *actor.Stopping:
		a.end(false, a.m.stopError(a.id))
	case *actor.Stopped:
		a.m.forget(a.id, ctx.Self())
	case runTask:
		a.m.received(a.id)
		a.queue = append(a.queue, &work{taskID: msg.id, req: msg.req})
		a.kick(ctx)
	case runSync:
		a.m.received(a.id)
		a.queue = append(a.queue, &work{op: msg.op, reply: msg.reply})
		a.kick(ctx)
	case loaded:
		a.busy, a.ready = false, true
		if msg.err != nil {
			// The record is unreadable: keep the actor, report the VM as
			// failed, and let a delete clean it up.
			a.m.cfg.Log.Error("load vm state", "vm", a.id, "err", msg.err)
		}
		a.apply(ctx, msg.st)
		a.kick(ctx)
	case opDone:
		w := a.current
		a.busy, a.current = false, nil
		a.apply(ctx, msg.st)
		a.finish(w, msg.err)
		a.observedChange(w)
		a.kick(ctx)
	case qmpEvent:
		a.onEvent(ctx, msg)
	case metricsTick:
		a.onMetricsTick(ctx)
	case sampled:
		a.onSampled(msg)
	case exited:
		if msg.proc == a.st.proc && !a.busy {
			a.queue = append([]*work{{op: opObserveExit}}, a.queue...)
			a.kick(ctx)
		}
	}
}

// end ends this incarnation: its goroutines are cancelled (and, with wait,
// awaited), its queued work fails with err, and its handles are dropped.
// Close waits for what end does not.
func (a *vmActor) end(wait bool, err error) {
	if a.cancel != nil {
		a.cancel()
	}
	if wait {
		c, cancel := context.WithTimeout(context.Background(), restartWait)
		if werr := a.g.wait(c); werr != nil {
			a.m.cfg.Log.Error("vm operation outlived its actor's restart", "vm", a.id, "err", werr)
		}
		cancel()
	} else {
		a.g.close()
	}
	if a.current != nil {
		a.finish(a.current, err)
		a.current = nil
	}
	for _, w := range a.queue {
		a.finish(w, err)
	}
	a.queue = nil
	a.release()
}

// release drops the actor's handles without touching QEMU: a restarted or
// stopped actor must leave the VM running.
func (a *vmActor) release() {
	if a.cancel != nil {
		a.cancel()
	}
	a.st.release()
	a.waitWatchers()
	a.st = vmState{}
	a.watching = nil
}

// release closes st's handles and leaves QEMU running.
func (st vmState) release() {
	if st.mon != nil {
		_ = st.mon.Close()
	}
	if st.proc != nil {
		_ = st.proc.Close()
	}
	if st.hub != nil {
		// QEMU runs on; its sessions learn that the agent went away and can
		// re-attach to the next one. The hub stops writing the log first.
		st.hub.Close(messages.ConsoleAgentGone, "the agent stopped; the VM keeps running")
	}
	if st.log != nil {
		_ = st.log.Close()
	}
}

// discard lets go of a result no incarnation will take: the VM's record
// on disk and QEMU itself are what the next one loads.
func discard(msg any) {
	switch r := msg.(type) {
	case loaded:
		r.st.release()
	case opDone:
		r.st.release()
	}
}

// logPanic logs a panic of Receive with its stack and passes it on to the
// supervisor (supervisor.go), which only sees its value.
func (a *vmActor) logPanic() {
	if p := recover(); p != nil {
		a.m.cfg.Log.Error("vm actor panicked", "vm", a.id, "panic", p, "stack", string(debug.Stack()))
		panic(p)
	}
}

// spawn runs f on a goroutine owned by this incarnation and the manager;
// it reports false, running nothing, once either is closing.
func (a *vmActor) spawn(f func()) bool {
	if !a.m.g.add() {
		return false
	}
	if !a.g.add() {
		a.m.g.done()
		return false
	}
	go func() {
		defer a.m.g.done()
		defer a.g.done()
		f()
	}()
	return true
}

// goRun runs f off the actor and delivers its result to the actor; a panic
// in f becomes an error result rather than a dead agent. It reports false
// when the actor or the manager is closing and f was not run.
func (a *vmActor) goRun(ctx actor.Context, f func(context.Context) any) bool {
	self, sys, c := ctx.Self(), ctx.ActorSystem(), a.ctx
	return a.spawn(func() {
		var result any
		func() {
			defer func() {
				if p := recover(); p != nil {
					a.m.cfg.Log.Error("vm operation panicked", "vm", a.id, "panic", p, "stack", string(debug.Stack()))
					result = opDone{st: vmState{}, err: fmt.Errorf("internal error: %v", p)}
				}
			}()
			result = f(c)
		}()
		if c.Err() != nil {
			// The incarnation ended (restart or stop) and will not take
			// the result.
			discard(result)
			return
		}
		sys.Root.Send(self, fromGo{from: a, msg: result})
	})
}

// apply installs the next state, publishes it and watches a new QEMU for exit.
func (a *vmActor) apply(ctx actor.Context, st vmState) {
	a.st = st
	if st.rec == nil {
		a.m.unpublish(a.id)
	} else {
		a.m.publish(st.rec.observed(a.m.cfg.Now()))
		if st.log != nil {
			a.m.setLog(a.id, st.log)
		}
		a.m.setHub(a.id, st.hub)
	}
	if st.proc == nil {
		a.mx = metricsState{}
		a.m.setMetrics(a.id, nil)
	}
	a.watch(ctx, st)
}

// kick starts the next queued item, or retires an actor whose VM is gone.
func (a *vmActor) kick(ctx actor.Context) {
	if a.busy || !a.ready {
		return
	}
	if a.st.proc != nil && isClosed(a.st.proc.Exited()) && (len(a.queue) == 0 || a.queue[0].op != opObserveExit) {
		a.queue = append([]*work{{op: opObserveExit}}, a.queue...)
	}
	if len(a.queue) == 0 {
		if a.st.rec == nil && a.m.retire(a.id) {
			ctx.Stop(ctx.Self())
		}
		return
	}
	w := a.queue[0]
	a.queue = a.queue[1:]
	a.starting(w)
	a.busy, a.current = true, w
	if w.taskID != "" {
		a.m.update(w.taskID, func(t *messages.AgentTask) {
			t.State, t.Message = messages.TaskRunning, "running on the node"
		})
	}
	if h := a.m.beforeOp.Load(); h != nil {
		(*h)(a.id, w.name())
	}
	st := a.st
	env := &opEnv{m: a.m, id: a.id, w: w}
	ok := a.goRun(ctx, func(c context.Context) any {
		next, err := env.run(c, st)
		return opDone{st: next, err: err}
	})
	if !ok {
		a.busy, a.current = false, nil
		a.finish(w, a.m.stopError(a.id))
	}
}

// finish reports the outcome of w to its task or caller.
func (a *vmActor) finish(w *work, err error) {
	if w == nil {
		return
	}
	var obs *messages.VMObserved
	if a.st.rec != nil {
		o := a.st.rec.observed(a.m.cfg.Now())
		obs = &o
	}
	if w.reply != nil {
		w.reply <- syncResult{vm: obs, err: err}
		return
	}
	if w.taskID == "" {
		if err != nil {
			a.m.cfg.Log.Warn("vm operation failed", "vm", a.id, "op", w.op, "err", err)
		}
		return
	}
	if err != nil {
		a.m.cfg.Log.Warn("task failed", "vm", a.id, "task", w.taskID, "kind", w.req.Kind, "err", err)
	} else {
		a.m.cfg.Log.Info("task done", "vm", a.id, "task", w.taskID, "kind", w.req.Kind)
	}
	a.m.update(w.taskID, func(t *messages.AgentTask) {
		t.VM = obs
		if err != nil {
			t.State, t.Error, t.Message = messages.TaskFailed, taskError(err), ""
			return
		}
		t.State, t.Progress, t.Message = messages.TaskSuccess, 100, ""
	})
}

// load reads the VM's record and re-adopts its QEMU if it still runs: after
// an agent restart or an actor crash, a running VM is found, never restarted.
func (a *vmActor) load(ctx context.Context) loaded {
	dir := a.m.vmStateDir(a.id)
	rec, err := loadRecord(dir)
	if err != nil || rec == nil {
		return loaded{err: err}
	}
	if rec.Phase == messages.PhaseCreating {
		env := &opEnv{m: a.m, id: a.id, w: &work{op: "roll back create"}}
		if err := env.rollBack(rec); err != nil {
			return loaded{st: vmState{rec: rec}, err: fmt.Errorf("roll back the create interrupted at step %s: %w", rec.Step, err)}
		}
		a.m.cfg.Log.Warn("rolled back a create the agent stopped in", "vm", a.id, "step", rec.Step)
		return loaded{}
	}
	l, err := qemu.OpenSerialLog(a.m.serialLogPath(a.id), a.m.cfg.SerialLogBytes)
	if err != nil {
		return loaded{st: vmState{rec: rec}, err: err}
	}
	st := vmState{rec: rec, log: l}
	proc, err := qemu.Attach(a.m.vmRunDir(a.id))
	if err != nil {
		if rec.Phase == messages.PhaseRunning || rec.Phase == messages.PhasePaused {
			rec.Phase, rec.Pid, rec.StartedAt = messages.PhaseStopped, 0, nil
			rec.Message, rec.Reason = "QEMU was not running when the agent started", messages.ReasonQEMUExited
			if err := rec.save(dir); err != nil {
				return loaded{st: st, err: err}
			}
		}
		return loaded{st: st}
	}
	st.proc = proc
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	mon, err := qemu.Dial(cctx, qemu.QMPPath(a.m.vmRunDir(a.id)))
	if err != nil {
		// QEMU lives but its monitor does not answer: keep the process
		// (never kill on our own failure) and say so.
		rec.Message = "re-adopted QEMU pid " + fmt.Sprint(proc.Pid) + " but QMP does not answer: " + err.Error()
		return loaded{st: st}
	}
	st.mon = mon
	status, err := mon.Status(cctx)
	if err == nil {
		rec.Phase = phaseOf(status)
	}
	rec.Pid = proc.Pid
	if err != nil || status.Status != "io-error" {
		rec.Message, rec.Reason = "", ""
	} else if rec.Reason != messages.ReasonIOError {
		// Paused on a disk error before this agent heard why.
		rec.Reason, rec.Message = messages.ReasonIOError, "paused: a disk write failed (found at agent start)"
	}
	if hub, err := a.m.dialConsole(a.id, l); err != nil {
		// The VM runs on without a console; the log misses its output
		// until the next start. Never fail a re-adoption over it.
		a.m.cfg.Log.Warn("re-attach serial console", "vm", a.id, "err", err)
	} else {
		st.hub = hub
	}
	a.m.cfg.Log.Info("re-adopted running vm", "vm", a.id, "pid", proc.Pid, "phase", rec.Phase)
	return loaded{st: st, err: rec.save(dir)}
}

func phaseOf(s qemu.Status) string {
	switch {
	case s.Running:
		return messages.PhaseRunning
	case s.Status == "paused" || s.Status == "suspended" || s.Status == "prelaunch" || s.Status == "io-error":
		return messages.PhasePaused
	case s.Status == "guest-panicked":
		return messages.PhaseCrashed
	case s.Status == "shutdown":
		return messages.PhaseStopped
	}
	return messages.PhaseRunning
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// taskError turns an operation's error into the task's stable code.
func taskError(err error) *messages.TaskError {
	var e *messages.Error
	if errors.As(err, &e) {
		msg := e.Error()
		var se *stepError
		if errors.As(err, &se) {
			msg = "step " + se.Step + ": " + msg
		}
		return &messages.TaskError{Code: e.Code, Message: msg}
	}
	if code := imageCode(err); code != "" {
		return &messages.TaskError{Code: code, Message: err.Error()}
	}
	var se *qemu.StartError
	if errors.As(err, &se) {
		return &messages.TaskError{Code: "qemu_start_failed", Message: err.Error()}
	}
	if errors.Is(err, context.Canceled) {
		return &messages.TaskError{Code: "agent_stopping", Message: "the agent stopped during the task: " + err.Error()}
	}
	return &messages.TaskError{Code: "agent_internal", Message: err.Error()}
}

// removeAll removes paths, ignoring ones already gone.
func removeAll(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
