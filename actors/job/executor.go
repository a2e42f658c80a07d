// Package job runs the control plane's jobs: a dispatcher that claims jobs
// from etcd for this replica, and one actor per running job that carries it
// out and records its outcome.
package job

import (
	"context"
	"errors"

	"github.com/otherix/otherix/messages"
)

// Outcome is what an executor decided about one attempt of a job.
type Outcome struct {
	// Retry, when set, is why this attempt could not finish; the job is tried
	// again after a backoff until its attempt budget runs out.
	Retry *messages.TaskError
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
var ErrNoNode = errors.New("job: no schedulable node")

// NoNodes is the placer while no node can run a VM: nodes enroll and
// heartbeat, but the agent has no VM API yet (the VM lifecycle work adds it
// and a real placer with it), so placing a VM anywhere would only fail later.
type NoNodes struct{}

// Place implements Placer.
func (NoNodes) Place(context.Context, *messages.VM) (string, error) { return "", ErrNoNode }

// Executor carries out one attempt of a VM job. Each kind decides from the VM
// what has to happen; anything that needs a node it cannot reach becomes a
// retry with a clear reason, never a pretended success.
type Executor struct {
	Placer Placer
}

// Run decides one attempt of j against vm (nil when the VM no longer exists).
func (e Executor) Run(ctx context.Context, j *messages.Job, vm *messages.VM) Outcome {
	if vm == nil {
		// The VM is gone; every operation on it is moot except its deletion.
		if j.Kind == messages.TaskVMDelete {
			return Outcome{Delete: true}
		}
		return Outcome{Retry: &messages.TaskError{Code: "vm_not_found", Message: "the vm no longer exists"}}
	}
	placed := vm.Status.Node != ""
	switch j.Kind {
	case messages.TaskVMCreate, messages.TaskVMStart:
		if placed {
			return agentUnavailable(vm.Status.Node)
		}
		node, err := e.Placer.Place(ctx, vm)
		if err != nil {
			return Outcome{Retry: &messages.TaskError{Code: "no_schedulable_node",
				Message: "no node can host this vm: agents cannot run VMs yet (no agent VM API in this build)"}}
		}
		return agentUnavailable(node)
	case messages.TaskVMStop:
		if placed {
			return agentUnavailable(vm.Status.Node)
		}
		// Never placed: nothing runs anywhere, so the VM is stopped as asked.
		st := vm.Status
		st.Phase, st.Message, st.ObservedGeneration = messages.PhaseStopped, "", vm.Generation
		return Outcome{Status: &st, Power: messages.PowerStopped}
	case messages.TaskVMDelete:
		if placed {
			return agentUnavailable(vm.Status.Node)
		}
		// Never placed: no disk, seed or process exists on any node.
		return Outcome{Delete: true}
	}
	return Outcome{Retry: &messages.TaskError{Code: "unknown_job_kind", Message: "this control plane does not know job kind " + j.Kind}}
}

// agentUnavailable is the outcome for work that needs a node agent. The agent
// API arrives with node enrollment; until then such work waits and fails
// with this reason once its attempts run out.
func agentUnavailable(node string) Outcome {
	return Outcome{Retry: &messages.TaskError{Code: "node_unreachable",
		Message: "node " + node + " cannot be reached: this control plane has no agent client yet"}}
}
