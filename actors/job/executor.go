// Package job runs the control plane's jobs: a dispatcher that claims jobs
// from etcd for this replica, and one actor per running job that carries it
// out and records its outcome.
package job

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/internal/requestid"
	"github.com/otherix/otherix/messages"
)

// Outcome is what an executor decided about one attempt of a job.
type Outcome struct {
	// Retry, when set, is why this attempt could not finish; the job is tried
	// again after a backoff until its attempt budget runs out.
	Retry *messages.TaskError
	// Fail, when set, ends the job failed at once, without further attempts:
	// the agent refused or failed the work, and doing it again would fail
	// the same way (a checksum mismatch, a bad image). Status, when set, is
	// the VM's status to write with it.
	Fail *messages.TaskError
	// Node is the node the VM is placed on after this attempt ("" if none);
	// a status written after a retry or failure keeps it.
	Node string
	// Finish ends the job with the VM's new status (and deletion when Delete).
	Status *messages.VMStatus
	Power  string
	Delete bool
}

// Placer chooses a node for a VM.
type Placer interface {
	Place(ctx context.Context, vm *messages.VM) (string, error)
}

// ErrNoNode is returned by a Placer when no node can host the VM.
var ErrNoNode = messages.Errorf(messages.KindConflict, "no_schedulable_node", "no node can host this vm")

// NoNodes is a placer for a control plane without nodes (tests).
type NoNodes struct{}

// Place implements Placer.
func (NoNodes) Place(context.Context, *messages.VM) (string, error) { return "", ErrNoNode }

// Agent is the part of the agent API the executor uses
// (*agentclient.Client in production).
type Agent interface {
	Submit(ctx context.Context, n agentclient.Node, req messages.AgentTaskRequest) (*messages.AgentTask, error)
	Task(ctx context.Context, n agentclient.Node, id string, wait time.Duration) (*messages.AgentTask, error)
}

var _ Agent = (*agentclient.Client)(nil)

// Nodes looks nodes up by name (the store in production).
type Nodes interface {
	NodeByName(ctx context.Context, name string) (*messages.Node, error)
}

// Attempt is what one attempt of a job may record before its outcome: the
// job actor implements it over the VM actor and the dispatcher's claim.
type Attempt interface {
	// Place commits the VM's placement on node (phase creating) before
	// anything is asked of the node.
	Place(ctx context.Context, node string) error
	// Task is the job's task as last written.
	Task() *messages.Task
	// Progress writes the agent's task id, progress and message into the
	// task, marking it running.
	Progress(ctx context.Context, agentTaskID string, progress int, message string) error
}

// Executor carries out one attempt of a VM job: it places the VM if it has
// to, hands the work to the node's agent as a task keyed by the job id and
// follows it to its end.
type Executor struct {
	Placer Placer
	Agent  Agent
	Nodes  Nodes
	// PollWait is each long poll's wait (default 30s).
	PollWait time.Duration
	// ProgressEvery bounds how often progress is written (default 1s).
	ProgressEvery time.Duration
}

// Run decides one attempt of j against vm (nil when the VM no longer exists).
// An error means nothing could be decided (the claim was lost, etcd or the
// VM actor did not answer); the attempt is then released with a backoff.
func (e Executor) Run(ctx context.Context, j *messages.Job, vm *messages.VM, att Attempt) (Outcome, error) {
	if vm == nil {
		// The VM is gone; every operation on it is moot except its deletion.
		if j.Kind == messages.TaskVMDelete {
			return Outcome{Delete: true}, nil
		}
		return Outcome{Retry: &messages.TaskError{Code: "vm_not_found", Message: "the vm no longer exists"}}, nil
	}
	node := vm.Status.Node
	kind := j.Kind
	switch j.Kind {
	case messages.TaskVMCreate, messages.TaskVMStart:
		if node == "" {
			placed, retry, err := e.place(ctx, vm, att)
			if retry != nil || err != nil {
				return Outcome{Retry: retry}, err
			}
			node = placed
		}
		if j.Kind == messages.TaskVMStart && notCreated(vm) {
			// A VM that exists on no node yet is created there; its spec
			// says running (the start set it), so the agent starts it too.
			kind = messages.TaskVMCreate
		}
	case messages.TaskVMStop, messages.TaskVMPoweroff:
		if node == "" {
			// Never placed: nothing runs anywhere, so the VM is stopped as asked.
			st := vm.Status
			st.Phase, st.Message, st.ObservedGeneration = messages.PhaseStopped, "", vm.Generation
			return Outcome{Status: &st, Power: messages.PowerStopped}, nil
		}
	case messages.TaskVMDelete:
		if node == "" {
			// Never placed: no disk, seed or process exists on any node.
			return Outcome{Delete: true}, nil
		}
	case messages.TaskVMReboot:
		if node == "" {
			return Outcome{Fail: &messages.TaskError{Code: "vm_not_placed", Message: "the vm is not on any node; start it instead"}}, nil
		}
	default:
		return Outcome{Retry: &messages.TaskError{Code: "unknown_job_kind", Message: "this control plane does not know job kind " + j.Kind}}, nil
	}
	out, err := e.onAgent(ctx, j, kind, vm, node, att)
	out.Node = node
	return out, err
}

// maxReplans bounds how often one attempt chooses a node again after the
// node it chose was filled by another placement before its commit.
const maxReplans = 8

// place chooses a node for vm and commits the VM there. The commit reserves
// the node's capacity and is refused with insufficient_capacity when another
// placement (on this replica or another) took it since the choice; the
// choice is then made again from the documents as they are now. retry is
// set when no node can take the VM; err when nothing could be decided.
func (e Executor) place(ctx context.Context, vm *messages.VM, att Attempt) (node string, retry *messages.TaskError, err error) {
	for i := 0; ; i++ {
		placed, err := e.Placer.Place(ctx, vm)
		if err != nil {
			if messages.KindOf(err) == messages.KindUnavailable || ctx.Err() != nil {
				return "", nil, fmt.Errorf("place vm %s: %w", vm.ID, err)
			}
			return "", taskError(err, "no_schedulable_node"), nil
		}
		// Recorded before the agent hears of it: a crash from here on
		// leaves a VM the control plane knows to be on that node.
		err = att.Place(ctx, placed)
		var me *messages.Error
		switch {
		case err == nil:
			return placed, nil, nil
		case errors.As(err, &me) && me.Code == messages.CodeInsufficientCapacity:
			if i < maxReplans {
				continue
			}
			return "", taskError(err, messages.CodeInsufficientCapacity), nil
		}
		return "", nil, fmt.Errorf("place vm %s on %s: %w", vm.ID, placed, err)
	}
}

// notCreated reports whether the VM may not exist on its node yet: never
// placed, placed by an attempt that did not finish, or a create that failed
// (the agent's create reuses whatever the failed one made).
func notCreated(vm *messages.VM) bool {
	switch vm.Status.Phase {
	case "", messages.PhasePending, messages.PhaseCreating, messages.PhaseFailed:
		return true
	}
	return vm.Status.Node == ""
}

// onAgent runs the job as an agent task on node and follows it to its end.
// kind is the agent task's kind, which differs from the job's when a start
// has to create the VM first.
func (e Executor) onAgent(ctx context.Context, j *messages.Job, kind string, vm *messages.VM, node string, att Attempt) (Outcome, error) {
	n, err := e.Nodes.NodeByName(ctx, node)
	switch {
	case messages.KindOf(err) == messages.KindNotFound:
		return unreachable(node, "it is not enrolled any more"), nil
	case err != nil:
		return Outcome{}, err
	case n.Phase != messages.NodeReady:
		return unreachable(node, "it is "+n.Phase), nil
	case n.Endpoint == "":
		return unreachable(node, "its agent has not reported an endpoint"), nil
	}
	an := agentclient.Node{Name: n.Name, Endpoint: n.Endpoint}
	req := messages.AgentTaskRequest{ID: j.ID, Kind: kind, Force: j.Force, TimeoutSeconds: j.TimeoutSeconds,
		VM: messages.AgentVM{ID: vm.ID, Name: vm.Name, Generation: vm.Generation, Spec: vm.Spec, NICs: vm.Status.NICs}}

	// The agent logs its side of the job under the task's id, which is
	// what the CLI shows for it.
	ctx = requestid.With(ctx, att.Task().ID)
	var t *messages.AgentTask
	if id := att.Task().AgentTaskID; id != "" {
		// A redelivered job resumes following its task; one the agent no
		// longer knows (it restarted) is submitted again under the same id.
		t, err = e.Agent.Task(ctx, an, id, 0)
		if messages.KindOf(err) == messages.KindNotFound {
			t, err = nil, nil
		}
	}
	if t == nil && err == nil {
		t, err = e.Agent.Submit(ctx, an, req)
	}
	if err != nil {
		return e.agentError(ctx, node, err)
	}
	last := time.Now()
	if err := att.Progress(ctx, t.ID, t.Progress, t.Message); err != nil {
		return Outcome{}, err
	}
	written := *t
	wait := e.PollWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	every := e.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	for !messages.Terminal(t.State) {
		next, err := e.Agent.Task(ctx, an, t.ID, wait)
		if messages.KindOf(err) == messages.KindNotFound {
			// The agent lost the task (a restart): submit it again, which
			// is harmless by the agent's contract.
			next, err = e.Agent.Submit(ctx, an, req)
		}
		if err != nil {
			return e.agentError(ctx, node, err)
		}
		t = next
		if (t.Progress != written.Progress || t.Message != written.Message) && time.Since(last) >= every && !messages.Terminal(t.State) {
			if err := att.Progress(ctx, t.ID, t.Progress, t.Message); err != nil {
				return Outcome{}, err
			}
			written, last = *t, time.Now()
		}
	}
	return finished(j, vm, node, t), nil
}

// agentError turns a failed agent call into an outcome: anything that may
// work later (unreachable, 5xx, garbage) is retried; the agent's considered
// refusal fails the job.
func (e Executor) agentError(ctx context.Context, node string, err error) (Outcome, error) {
	if ctx.Err() != nil {
		return Outcome{}, ctx.Err()
	}
	if agentclient.Retryable(err) {
		return Outcome{Retry: &messages.TaskError{Code: "node_unreachable",
			Message: fmt.Sprintf("node %s cannot be reached: %v", node, err)}}, nil
	}
	return Outcome{Fail: taskError(err, "agent_error")}, nil
}

// finished is the outcome of an agent task that ended.
func finished(j *messages.Job, vm *messages.VM, node string, t *messages.AgentTask) Outcome {
	switch t.State {
	case messages.TaskSuccess:
		if j.Kind == messages.TaskVMDelete {
			return Outcome{Delete: true}
		}
		st := vm.Status
		st.Node, st.Message = node, ""
		if o := t.VM; o != nil {
			st.Phase, st.Pid, st.StartedAt, st.ObservedGeneration = o.Phase, o.Pid, o.StartedAt, o.ObservedGeneration
			at := o.ObservedAt.UTC()
			st.ObservedAt = &at
			st.Message = o.Message
		}
		return Outcome{Status: &st, Power: powerAfter(j.Kind)}
	case messages.TaskCancelled:
		return Outcome{Fail: &messages.TaskError{Code: "agent_task_cancelled", Message: "the agent cancelled the task: " + t.Message}}
	}
	cause := t.Error
	if cause == nil || cause.Code == "" {
		cause = &messages.TaskError{Code: "agent_task_failed", Message: t.Message}
	}
	return Outcome{Fail: cause}
}

// powerAfter is the power state a successful task of kind leaves in the spec
// ("" keeps it).
func powerAfter(kind string) string {
	switch kind {
	case messages.TaskVMStart:
		return messages.PowerRunning
	case messages.TaskVMStop, messages.TaskVMPoweroff:
		return messages.PowerStopped
	}
	return ""
}

func unreachable(node, why string) Outcome {
	return Outcome{Retry: &messages.TaskError{Code: "node_unreachable", Message: "node " + node + " cannot run the task: " + why}}
}

// taskError is err as a task error: its code when it is a domain error,
// code otherwise.
func taskError(err error, code string) *messages.TaskError {
	var me *messages.Error
	if errors.As(err, &me) {
		return &messages.TaskError{Code: me.Code, Message: me.Message, Details: me.Details}
	}
	return &messages.TaskError{Code: code, Message: err.Error()}
}

// NoAgent is the agent client of a control plane that cannot call agents
// (no client certificate configured): every call is unreachable.
type NoAgent struct{}

var errNoAgent = &agentclient.Error{Err: fmt.Errorf("%w: this control plane has no agent client", agentclient.ErrUnreachable)}

// Submit implements Agent.
func (NoAgent) Submit(context.Context, agentclient.Node, messages.AgentTaskRequest) (*messages.AgentTask, error) {
	return nil, errNoAgent
}

// Task implements Agent.
func (NoAgent) Task(context.Context, agentclient.Node, string, time.Duration) (*messages.AgentTask, error) {
	return nil, errNoAgent
}
