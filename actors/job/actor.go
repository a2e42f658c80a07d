package job

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// run hands a claimed job to its job actor.
type run struct {
	job     *messages.Job
	session *store.Dispatcher
}

type ran struct {
	by  *jobActor
	err error
}

// JobProps returns the props of the actor for one running job.
func JobProps(d Deps) func(id string) *actor.Props {
	return func(id string) *actor.Props {
		return actor.PropsFromProducer(func() actor.Actor { return &jobActor{deps: d, id: id} })
	}
}

// jobActor carries out one attempt of one job and records its outcome. The
// attempt's I/O runs off the actor; the actor only starts it and reports.
type jobActor struct {
	deps       Deps
	id         string
	dispatcher *actor.PID
	current    *run
	// next is a delivery that arrived while an attempt was running (the job
	// was claimed again by a restarted dispatcher); it runs after current.
	next *run
}

func (a *jobActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case run:
		a.dispatcher = ctx.Sender()
		if a.current != nil {
			a.next = &m
			return
		}
		a.current = &m
		a.attempt(ctx, m)
	case *actor.Restarting:
		a.abandon()
	case ran:
		if m.by != a {
			return
		}
		a.current = nil
		if m.err != nil {
			a.deps.Log.Warn("job attempt ended with an error", "job", a.id, "err", m.err)
		}
		if a.next != nil {
			a.current, a.next = a.next, nil
			a.attempt(ctx, *a.current)
			return
		}
		if a.dispatcher != nil {
			ctx.Send(a.dispatcher, Done{JobID: a.id})
		}
		// Stop through the guardian, not directly: the dispatcher may hand
		// this job out again at once, and the guardian holds that delivery
		// back until this actor has stopped instead of sending it to a
		// process that is going away.
		ctx.Send(ctx.Parent(), system.Passivate{ID: a.id})
	case system.StopIfIdle:
		if a.current == nil {
			ctx.Stop(ctx.Self())
			return
		}
		ctx.Send(ctx.Parent(), system.StillBusy{ID: a.id})
	case system.Crashed:
		panic(m.Reason)
	}
}

// abandon gives up an attempt whose actor is being restarted: the new
// incarnation never sees the run message, so the claim is released for a later
// attempt and the dispatcher told the job is no longer active here.
func (a *jobActor) abandon() {
	r := a.current
	if r == nil {
		return
	}
	a.current = nil
	d, dispatcher := a.deps, a.dispatcher
	if dispatcher == nil {
		return
	}
	d.Runtime.Go(dispatcher, func(c context.Context) any {
		if err := r.session.Retry(c, r.job, nil, "job actor restarted", d.backoff(r.job)); err != nil {
			d.Log.Warn("release claim of abandoned job", "job", r.job.ID, "err", err)
		}
		return Done{JobID: r.job.ID}
	})
}

func (a *jobActor) attempt(ctx actor.Context, r run) {
	d := a.deps
	d.Runtime.Go(ctx.Self(), func(c context.Context) any {
		return ran{by: a, err: d.attempt(c, r.job, r.session)}
	})
}

// attempt runs one attempt of j while session holds its claim. If the attempt
// could not record an outcome, the claim is released with a backoff so that the
// job is not stranded behind a claim nobody works on.
func (d Deps) attempt(ctx context.Context, j *messages.Job, session *store.Dispatcher) error {
	err := d.attemptOnce(ctx, j, session)
	if err == nil || errors.Is(err, messages.ErrClaimLost) {
		return err
	}
	// The release is retried: an attempt cut by a lost quorum (a leader
	// killed) fails its release the same way for a second or two, and a
	// claim left held by this live dispatcher is never handed out again
	// (its task stayed pending for good: TestKill9DuringIdempotentCreates).
	var rerr error
	wait, deadline := 100*time.Millisecond, time.Now().Add(releaseRetryMax)
	for {
		var held bool
		if held, rerr = session.Holds(ctx, j.ID); rerr == nil {
			if !held {
				return err
			}
			if rerr = session.Retry(ctx, j, nil, err.Error(), d.backoff(j)); rerr == nil || errors.Is(rerr, messages.ErrClaimLost) {
				return err
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%w; release claim: %v", err, rerr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// releaseRetryMax bounds the retries of releasing a failed attempt's claim;
// it outlasts an election.
const releaseRetryMax = 30 * time.Second

func (d Deps) attemptOnce(ctx context.Context, j *messages.Job, session *store.Dispatcher) error {
	// The task and the VM come from the VM's actor, their one writer, not
	// from etcd behind its back.
	view, err := d.ask(j.Target.ID, messages.GetVMJob{TaskID: j.TaskID})
	if err != nil {
		return err
	}
	task, vm := view.Task, view.VM
	if err := view.Err; messages.KindOf(err) == messages.KindNotFound || (err == nil && messages.Terminal(task.State)) {
		return session.Drop(ctx, j)
	} else if err != nil {
		return err
	}
	now := d.Store.Now().UTC()
	task.UpdatedAt = now
	if j.Attempts > j.MaxAttempts {
		// Earlier attempts ended in errors rather than outcomes (etcd
		// trouble, a crash); the budget still holds.
		cause := &messages.TaskError{Code: "attempts_exhausted", Message: "the job's attempts ran out: " + j.LastError}
		task.State, task.Error, task.FinishedAt = messages.TaskFailed, cause, &now
		task.Message = fmt.Sprintf("gave up after %d attempts", j.MaxAttempts)
		return d.finish(ctx, j, task, session, failedStatus(j, vm, cause, ""), failedPower(j), false)
	}
	att := &attempt{d: d, j: j, task: task, session: session}
	out, err := d.Executor.Run(ctx, j, vm, att)
	if err != nil {
		return err
	}
	now = d.Store.Now().UTC()
	task.UpdatedAt = now
	switch {
	case out.Fail != nil:
		task.State, task.Error, task.FinishedAt = messages.TaskFailed, out.Fail, &now
		task.Message = out.Fail.Message
		st := out.Status
		if st == nil {
			st = failedStatus(j, vm, out.Fail, out.Node)
		}
		return d.finish(ctx, j, task, session, st, failedPower(j), false)
	case out.Retry != nil:
		if j.Attempts < j.MaxAttempts {
			wait := d.backoff(j)
			task.State = messages.TaskPending // nothing runs until the next attempt
			task.Message = fmt.Sprintf("attempt %d of %d: %s; retrying in %s", j.Attempts, j.MaxAttempts, out.Retry.Message, wait.Round(time.Millisecond))
			return d.retry(j, task, session, out.Retry.Message, wait)
		}
		task.State, task.Error, task.FinishedAt = messages.TaskFailed, out.Retry, &now
		task.Message = fmt.Sprintf("gave up after %d attempts", j.Attempts)
		return d.finish(ctx, j, task, session, failedStatus(j, vm, out.Retry, out.Node), failedPower(j), false)
	}
	task.State, task.Progress, task.FinishedAt, task.Message = messages.TaskSuccess, 100, &now, ""
	return d.finish(ctx, j, task, session, out.Status, out.Power, out.Delete)
}

// failedStatus is the VM status after a job gave up: a VM that never got
// created is marked failed; otherwise its observed state is unchanged. node
// is where the attempt placed the VM, if it did.
func failedStatus(j *messages.Job, vm *messages.VM, cause *messages.TaskError, node string) *messages.VMStatus {
	if vm == nil {
		return nil
	}
	st := vm.Status
	if node != "" {
		st.Node = node
	}
	if j.Kind == messages.TaskVMCreate {
		st.Phase = messages.PhaseFailed
	}
	st.Message = j.Kind + " failed: " + cause.Message
	return &st
}

// failedPower is the power state a failed job leaves in the spec ("" keeps
// it). A VM whose create failed runs nowhere: its spec says stopped, so
// what the API shows is true, and a start retries the create.
func failedPower(j *messages.Job) string {
	if j.Kind == messages.TaskVMCreate {
		return messages.PowerStopped
	}
	return ""
}

// attempt is the Attempt of one run of a job: placement through the VM's
// actor, progress into the task, both under the dispatcher's claim.
type attempt struct {
	d       Deps
	j       *messages.Job
	task    *messages.Task
	session *store.Dispatcher
}

func (a *attempt) Task() *messages.Task { return a.task }

func (a *attempt) Place(ctx context.Context, node string) error {
	msg := messages.PlaceVM{JobID: a.j.ID, TaskID: a.j.TaskID, Lease: int64(a.session.Lease()), Node: node}
	return a.d.askVM(a.j.Target.ID, msg)
}

func (a *attempt) Progress(ctx context.Context, agentTaskID string, progress int, message string) error {
	next := *a.task
	next.AgentTaskID, next.Progress, next.Message = agentTaskID, min(max(progress, 0), 99), message
	next.State = messages.TaskRunning
	next.UpdatedAt = a.d.Store.Now().UTC()
	msg := messages.ProgressVMJob{Job: a.j, Task: &next, Lease: int64(a.session.Lease())}
	r, err := a.d.ask(a.j.Target.ID, msg)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		return fmt.Errorf("record progress of job %s: %w", a.j.ID, err)
	}
	*a.task = *r.Task
	return nil
}

// retry releases j for another attempt after wait, with its task saying
// why, through the VM's actor, which writes the task.
func (d Deps) retry(j *messages.Job, task *messages.Task, session *store.Dispatcher, cause string, wait time.Duration) error {
	msg := messages.RetryVMJob{Job: j, Task: task, Lease: int64(session.Lease()), Cause: cause, NotBefore: d.Store.Now().Add(wait)}
	return d.askVM(j.Target.ID, msg)
}

// finish asks the VM's actor to commit the outcome with the VM's own change.
func (d Deps) finish(ctx context.Context, j *messages.Job, task *messages.Task, session *store.Dispatcher, st *messages.VMStatus, power string, del bool) error {
	msg := messages.FinishVMJob{Job: j, Task: task, Lease: int64(session.Lease()), Status: st, Power: power, Delete: del}
	if err := d.askVM(j.Target.ID, msg); err != nil {
		return fmt.Errorf("finish job %s: %w", j.ID, err)
	}
	return nil
}

// askVM sends one command to a VM's actor and waits for its reply.
func (d Deps) askVM(id string, msg any) error {
	r, err := d.ask(id, msg)
	if err != nil {
		return err
	}
	return r.Err
}

// ask sends one command to a VM's actor and returns its reply; the error is
// the asking's (the actor did not answer in time).
func (d Deps) ask(id string, msg any) (messages.VMReply, error) {
	res, err := d.Runtime.System.Root.RequestFuture(d.VMs, system.Deliver{ID: id, Msg: msg}, d.AskTimeout).Result()
	if err != nil {
		return messages.VMReply{}, err
	}
	return res.(messages.VMReply), nil
}

func (d Deps) backoff(j *messages.Job) time.Duration {
	b := d.BackoffBase
	for i := 1; i < j.Attempts && b < d.BackoffMax; i++ {
		b *= 2
	}
	return min(b, d.BackoffMax)
}
