//go:build etcd

package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/actors/job"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// opsAgent is a node agent that finishes every task at once with the VM
// running, and answers pause, resume and log calls; err, when set, is what
// those three fail with.
type opsAgent struct {
	mu    sync.Mutex
	err   error
	tail  int64
	nodes []agentclient.Node
	// reqs are the tasks submitted, in order.
	reqs []messages.AgentTaskRequest
}

var _ gateway.AgentCaller = (*opsAgent)(nil)

func (a *opsAgent) observed(id, phase string) *messages.VMObserved {
	now := time.Now().UTC()
	return &messages.VMObserved{ID: id, Phase: phase, ObservedGeneration: 1, Pid: 4242, StartedAt: &now, ObservedAt: now}
}

func (a *opsAgent) Submit(_ context.Context, _ agentclient.Node, req messages.AgentTaskRequest) (*messages.AgentTask, error) {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	now := time.Now().UTC()
	return &messages.AgentTask{ID: req.ID, Kind: req.Kind, VMID: req.VM.ID, State: messages.TaskSuccess, Progress: 100,
		VM: a.observed(req.VM.ID, messages.PhaseRunning), CreatedAt: now, UpdatedAt: now, FinishedAt: &now}, nil
}

func (a *opsAgent) Task(context.Context, agentclient.Node, string, time.Duration) (*messages.AgentTask, error) {
	return nil, messages.NotFound("task", "x")
}

func (a *opsAgent) call(n agentclient.Node) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nodes = append(a.nodes, n)
	return a.err
}

func (a *opsAgent) Pause(_ context.Context, n agentclient.Node, id string) (*messages.VMObserved, error) {
	if err := a.call(n); err != nil {
		return nil, err
	}
	return a.observed(id, messages.PhasePaused), nil
}

func (a *opsAgent) Resume(_ context.Context, n agentclient.Node, id string) (*messages.VMObserved, error) {
	if err := a.call(n); err != nil {
		return nil, err
	}
	return a.observed(id, messages.PhaseRunning), nil
}

func (a *opsAgent) Log(_ context.Context, n agentclient.Node, id string, tail int64) ([]byte, error) {
	if err := a.call(n); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.tail = tail
	a.mu.Unlock()
	return []byte("serial of " + id), nil
}

// Console is not used by these tests; it completes gateway.AgentCaller.
func (a *opsAgent) Console(context.Context, agentclient.Node, string, string, bool) (*websocket.Conn, error) {
	return nil, errors.New("opsAgent has no consoles")
}

func (a *opsAgent) setErr(err error) {
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

// runningVM starts a gateway whose tasks go to agent and synchronous calls
// to calls, enrolls node n1 with an endpoint and creates VM "web" on it,
// running.
func runningVM(t *testing.T, agent job.Agent, calls gateway.AgentCaller) (*gateway.Gateway, *messages.VM) {
	t.Helper()
	cfg := fastJobs()
	cfg.Agent, cfg.Calls = agent, calls
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute}
	g, st := startGateway(t, cfg)
	ctx := t.Context()
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	_, cert := enrollNode(t, g, "n1")
	hb := observed(8)
	hb.Endpoint = "https://n1.example:7444"
	if _, err := g.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	vm, _ := createVM(t, g, "web")
	if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool {
		got, err := g.GetVM(ctx, owner, vm.ID)
		return err == nil && got.Status.Phase == messages.PhaseRunning && got.Status.ActiveTask == ""
	}) {
		got, _ := g.GetVM(ctx, owner, vm.ID)
		t.Fatalf("the vm never ran: %+v", got.Status)
	}
	return g, vm
}

// TestSyncVMOps: pause, resume and logs go to the agent of the VM's node and
// the answer shows what it reports; a VM that does not run, a node that
// cannot be reached and another owner's VM are refused in the API's terms.
func TestSyncVMOps(t *testing.T) {
	agent := &opsAgent{}
	g, vm := runningVM(t, agent, agent)
	ctx := t.Context()

	paused, err := g.PauseVM(ctx, owner, "web")
	if err != nil || paused.Status.Phase != messages.PhasePaused || paused.Status.Node != "n1" {
		t.Fatalf("pause: %+v %v", paused, err)
	}
	if got, _ := g.GetVM(ctx, owner, vm.ID); got.Status.Phase != messages.PhasePaused {
		t.Fatalf("the pause was not recorded: %+v", got.Status)
	}
	resumed, err := g.ResumeVM(ctx, owner, vm.ID)
	if err != nil || resumed.Status.Phase != messages.PhaseRunning {
		t.Fatalf("resume: %+v %v", resumed, err)
	}
	out, err := g.VMLogs(ctx, owner, "web", 100)
	if err != nil || string(out) != "serial of "+vm.ID || agent.tail != 100 {
		t.Fatalf("logs: %q %v (tail %d)", out, err, agent.tail)
	}
	if n := agent.nodes[0]; n.Name != "n1" || n.Endpoint != "https://n1.example:7444" {
		t.Errorf("agent called as %+v", n)
	}

	// Another owner's VM is not found, and the attempt is out of scope.
	if _, err := g.PauseVM(ctx, "mallory", vm.ID); !errors.Is(err, messages.ErrOutOfScope) {
		t.Errorf("another owner's pause: %v", err)
	}
	if _, err := g.VMLogs(ctx, "mallory", vm.ID, 0); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("another owner's logs: %v", err)
	}
	if _, err := g.VMLogs(ctx, owner, vm.ID, 2<<20); messages.KindOf(err) != messages.KindInvalid {
		t.Errorf("a tail over the cap: %v", err)
	}

	for _, tt := range []struct {
		name string
		err  error
		kind messages.Kind
		code string
	}{
		{"unreachable", &agentclient.Error{Err: fmt.Errorf("%w: dial tcp: refused", agentclient.ErrUnreachable)}, messages.KindUnavailable, "node_unreachable"},
		{"agent 5xx", &agentclient.Error{Status: 503, Err: fmt.Errorf("%w: %w", agentclient.ErrAgentUnavailable,
			messages.Errorf(messages.KindUnavailable, "busy", "busy"))}, messages.KindUnavailable, "node_unreachable"},
		{"agent refuses", &agentclient.Error{Status: 409, Err: messages.Errorf(messages.KindConflict, "vm_not_running", "vm is not running")},
			messages.KindConflict, "vm_not_running"},
		{"agent does not know it", &agentclient.Error{Status: 404, Err: messages.NotFound("vm", vm.ID)}, messages.KindConflict, "vm_not_running"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			agent.setErr(tt.err)
			_, err := g.PauseVM(ctx, owner, vm.ID)
			var me *messages.Error
			if !errors.As(err, &me) || me.Kind != tt.kind || me.Code != tt.code {
				t.Fatalf("pause: %v, want %s", err, tt.code)
			}
			if _, err := g.VMLogs(ctx, owner, vm.ID, 0); !errors.As(err, &me) || me.Code != tt.code {
				t.Fatalf("logs: %v, want %s", err, tt.code)
			}
		})
	}
	agent.setErr(nil)

	// Task options reach the agent: a stop's timeout, a reboot's force.
	for _, req := range []messages.RequestVMTask{
		{Kind: messages.TaskVMReboot, Force: true},
		{Kind: messages.TaskVMStop, TimeoutSeconds: 120},
	} {
		_, task, err := g.RunVMTask(ctx, owner, vm.ID, req)
		if err != nil {
			t.Fatalf("%s: %v", req.Kind, err)
		}
		if done := waitTask(t, g, task.ID); done.State != messages.TaskSuccess {
			t.Fatalf("%s: %+v", req.Kind, done)
		}
		agent.mu.Lock()
		last := agent.reqs[len(agent.reqs)-1]
		agent.mu.Unlock()
		if last.Kind != req.Kind || last.Force != req.Force || last.TimeoutSeconds != req.TimeoutSeconds {
			t.Errorf("agent got %+v for %+v", last, req)
		}
	}
	if _, _, err := g.RunVMTask(ctx, owner, vm.ID, messages.RequestVMTask{Kind: messages.TaskVMStop, TimeoutSeconds: 7200}); messages.KindOf(err) != messages.KindInvalid {
		t.Errorf("a stop timeout over an hour: %v", err)
	}

	// A VM of an architecture no node has is refused at once.
	_, _, err = g.CreateVM(ctx, owner, messages.CreateVMRequest{Name: "arm", Spec: messages.VMSpec{
		Image: messages.ImageSource{URL: "https://img.example/a.qcow2"}, Arch: messages.ArchARM64}})
	var me *messages.Error
	if !errors.As(err, &me) || me.Code != "unschedulable" || me.Details["resource"] != "arch" {
		t.Fatalf("create of an arm64 vm on an amd64 cluster: %v, want unschedulable", err)
	}
	// A VM no node can take now (n1's pool has 50 GiB free) is never
	// placed: nothing to pause, no log.
	arm, _, err := g.CreateVM(ctx, owner, messages.CreateVMRequest{Name: "arm", Spec: messages.VMSpec{
		Image: messages.ImageSource{URL: "https://img.example/a.qcow2"}, DiskGiB: 60}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Until(10*time.Second, 5*time.Millisecond, func() bool {
		got, err := g.GetVM(ctx, owner, arm.ID)
		return err == nil && got.Status.ActiveTask == ""
	})
	for name, err := range map[string]error{
		"pause":  func() error { _, err := g.PauseVM(ctx, owner, "arm"); return err }(),
		"resume": func() error { _, err := g.ResumeVM(ctx, owner, "arm"); return err }(),
		"logs":   func() error { _, err := g.VMLogs(ctx, owner, "arm", 0); return err }(),
	} {
		var me *messages.Error
		if !errors.As(err, &me) || me.Code != "vm_not_running" || me.Kind != messages.KindConflict {
			t.Errorf("%s of an unplaced vm: %v", name, err)
		}
	}
}

// TestSyncVMOpsWithoutAgentClient: a control plane that cannot call agents
// says so as node_unreachable rather than failing obscurely.
func TestSyncVMOpsWithoutAgentClient(t *testing.T) {
	g, vm := runningVM(t, &taskOnlyAgent{opsAgent{}}, nil)
	ctx := t.Context()
	if _, err := g.PauseVM(ctx, owner, vm.ID); messages.KindOf(err) != messages.KindUnavailable {
		t.Fatalf("pause without an agent client: %v", err)
	}
}

// taskOnlyAgent runs tasks but has no synchronous calls.
type taskOnlyAgent struct{ a opsAgent }

func (t *taskOnlyAgent) Submit(ctx context.Context, n agentclient.Node, req messages.AgentTaskRequest) (*messages.AgentTask, error) {
	return t.a.Submit(ctx, n, req)
}

func (t *taskOnlyAgent) Task(ctx context.Context, n agentclient.Node, id string, wait time.Duration) (*messages.AgentTask, error) {
	return t.a.Task(ctx, n, id, wait)
}
