package gateway

import (
	"context"
	"errors"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/messages"
)

// The synchronous VM operations: pause, resume and the serial log. They are
// fast, so they are not tasks (DESIGN §5): the gateway calls the agent of the
// VM's node directly and answers with what it reports.

// AgentCaller is the part of the agent API the synchronous VM operations and
// consoles use (Config.Calls); *agentclient.Client implements it.
type AgentCaller interface {
	Pause(ctx context.Context, n agentclient.Node, id string) (*messages.VMObserved, error)
	Resume(ctx context.Context, n agentclient.Node, id string) (*messages.VMObserved, error)
	Log(ctx context.Context, n agentclient.Node, id string, tail int64) ([]byte, error)
	ConsoleDialer
}

var _ AgentCaller = (*agentclient.Client)(nil)

// MaxLogTail bounds how much serial output one request may ask for (the
// agent's own cap).
const MaxLogTail = 1 << 20

// errNoAgentCaller answers when no client for synchronous calls is
// configured (a control plane without an agent client).
var errNoAgentCaller = nodeUnreachable("", "this control plane has no agent client")

// vmNotRunning refuses an operation that needs the VM's QEMU process.
func vmNotRunning(vm *messages.VM, why string) *messages.Error {
	return messages.Errorf(messages.KindConflict, "vm_not_running", "vm %s %s", vm.Name, why).
		WithDetail("phase", vm.Status.Phase)
}

// nodeUnreachable reports a node whose agent cannot be called now.
func nodeUnreachable(node, why string) *messages.Error {
	msg := "the node's agent cannot be reached: " + why
	if node != "" {
		msg = "node " + node + " cannot be reached: " + why
	}
	e := messages.Errorf(messages.KindUnavailable, "node_unreachable", "%s", msg)
	if node != "" {
		e = e.WithDetail("node", node)
	}
	return e
}

// PauseVM pauses a running VM's vCPUs on its node and records what the
// agent reports.
func (g *Gateway) PauseVM(ctx context.Context, owner, ref string) (*messages.VM, error) {
	return g.powerOp(ctx, owner, ref, AgentCaller.Pause)
}

// ResumeVM resumes a paused VM on its node and records what the agent
// reports.
func (g *Gateway) ResumeVM(ctx context.Context, owner, ref string) (*messages.VM, error) {
	return g.powerOp(ctx, owner, ref, AgentCaller.Resume)
}

// VMLogs returns the end of a VM's serial console output as kept on its
// node: at most tail bytes (0 for the agent's default).
func (g *Gateway) VMLogs(ctx context.Context, owner, ref string, tail int64) ([]byte, error) {
	if tail < 0 || tail > MaxLogTail {
		return nil, messages.Invalid("tail", "must be between 1 and %d bytes", MaxLogTail)
	}
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	if vm.Status.Node == "" {
		return nil, vmNotRunning(vm, "has not been placed on a node, so it has no serial output yet")
	}
	ac, n, err := g.agentFor(ctx, vm.Status.Node)
	if err != nil {
		return nil, err
	}
	out, err := ac.Log(ctx, n, vm.ID, tail)
	if err != nil {
		return nil, agentCallError(vm, n.Name, err)
	}
	return out, nil
}

// powerOp runs pause or resume on the VM's node, then merges the agent's
// observation into the VM so the answer shows the new phase.
func (g *Gateway) powerOp(ctx context.Context, owner, ref string,
	call func(AgentCaller, context.Context, agentclient.Node, string) (*messages.VMObserved, error)) (*messages.VM, error) {
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	switch {
	case vm.Status.Node == "":
		return nil, vmNotRunning(vm, "is not placed on a node")
	case vm.Status.ActiveTask != "":
		return nil, messages.Errorf(messages.KindConflict, "vm_busy",
			"vm %s has a task in progress; wait for it or cancel it", vm.Name).WithDetail("task_id", vm.Status.ActiveTask)
	}
	switch vm.Status.Phase {
	case messages.PhaseRunning, messages.PhasePaused, messages.PhaseUnknown:
		// Unknown: the node stopped reporting; the call itself tells.
	default:
		return nil, vmNotRunning(vm, "is "+vm.Status.Phase)
	}
	ac, n, err := g.agentFor(ctx, vm.Status.Node)
	if err != nil {
		return nil, err
	}
	obs, err := call(ac, ctx, n, vm.ID)
	if err != nil {
		return nil, agentCallError(vm, n.Name, err)
	}
	reply, err := g.askVM(ctx, vm.ID, messages.ObserveVM{Node: n.Name, Observed: *obs})
	if err != nil {
		return nil, err
	}
	if reply.VM == nil {
		return vm, nil
	}
	return reply.VM, nil
}

// agentFor returns the agent client and the address of node, refusing a
// node that cannot be called now.
func (g *Gateway) agentFor(ctx context.Context, name string) (AgentCaller, agentclient.Node, error) {
	ac := g.cfg.Calls
	if ac == nil {
		return nil, agentclient.Node{}, errNoAgentCaller
	}
	n, err := g.st.NodeByName(ctx, name)
	switch {
	case messages.KindOf(err) == messages.KindNotFound:
		return nil, agentclient.Node{}, nodeUnreachable(name, "it is not enrolled any more")
	case err != nil:
		return nil, agentclient.Node{}, err
	case n.Phase != messages.NodeReady:
		return nil, agentclient.Node{}, nodeUnreachable(name, "it is "+n.Phase)
	case n.Endpoint == "":
		return nil, agentclient.Node{}, nodeUnreachable(name, "its agent has not reported an endpoint")
	}
	return ac, agentclient.Node{Name: n.Name, Endpoint: n.Endpoint}, nil
}

// agentCallError maps a failed agent call to the API's terms: a node that
// cannot be reached (or cannot work now) is node_unreachable; an agent that
// does not know the VM means it is not running there; any other considered
// answer of the agent (vm_not_running, say) passes through with its code.
func agentCallError(vm *messages.VM, node string, err error) error {
	var me *messages.Error
	switch {
	case agentclient.Retryable(err):
		return &messages.Error{Kind: messages.KindUnavailable, Code: "node_unreachable",
			Message: "node " + node + " cannot be reached now; retry later",
			Details: map[string]any{"node": node}, Err: err}
	case errors.As(err, &me) && me.Kind == messages.KindNotFound:
		return vmNotRunning(vm, "is not known to node "+node)
	case errors.As(err, &me):
		return me
	}
	return err
}
