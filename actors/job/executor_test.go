package job_test

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/job"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/messages"
)

// fakeAttempt records what the executor asks of the job's attempt.
type fakeAttempt struct {
	mu       sync.Mutex
	task     messages.Task
	placed   []string
	progress []string
	onProg   func()
}

func (f *fakeAttempt) Place(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.placed = append(f.placed, node)
	return nil
}

func (f *fakeAttempt) Task() *messages.Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.task
	return &t
}

func (f *fakeAttempt) Progress(_ context.Context, id string, _ int, msg string) error {
	f.mu.Lock()
	f.task.AgentTaskID = id
	f.progress = append(f.progress, msg)
	cb := f.onProg
	f.mu.Unlock()
	if cb != nil {
		cb()
	}
	return nil
}

type fakeNodes map[string]*messages.Node

func (f fakeNodes) NodeByName(_ context.Context, name string) (*messages.Node, error) {
	if n, ok := f[name]; ok {
		return n, nil
	}
	return nil, messages.NotFound("node", name)
}

type placeOn string

func (p placeOn) Place(context.Context, *messages.VM) (string, error) { return string(p), nil }

func testVM() *messages.VM {
	return &messages.VM{ID: "vm1", Name: "web", Generation: 2, Spec: messages.VMSpec{CPUs: 1, MemoryMiB: 512, Arch: "amd64",
		PowerState: messages.PowerRunning}, Status: messages.VMStatus{Phase: messages.PhasePending}}
}

// TestRedeliveredJobFollowsTheSameAgentTask: a job whose attempt died after
// the agent took its task resumes polling that task instead of starting
// another; one whose agent task id was never recorded submits again under
// the same id and the agent answers the task it has.
func TestRedeliveredJobFollowsTheSameAgentTask(t *testing.T) {
	p := agenttest.NewPKI(t)
	a := agenttest.Start(t, p, "n1", func(req messages.AgentTaskRequest) agenttest.Result {
		return agenttest.Result{VM: agenttest.VMAfter(req), After: 300 * time.Millisecond}
	})
	cert := p.ClientCert(t)
	e := job.Executor{Placer: placeOn("n1"), Nodes: fakeNodes{"n1": {Name: "n1", Phase: messages.NodeReady, Endpoint: a.URL}},
		Agent: agentclient.New(p.CA.Pool(), func() (*tls.Certificate, error) { return &cert, nil }), PollWait: 5 * time.Second}
	j := &messages.Job{ID: "job-1", TaskID: "task-1", Kind: messages.TaskVMCreate}

	// First delivery: the attempt dies (its context ends) once the agent
	// has the task and its id is recorded.
	ctx, cancel := context.WithCancel(t.Context())
	att := &fakeAttempt{task: messages.Task{ID: "task-1"}, onProg: cancel}
	if _, err := e.Run(ctx, j, testVM(), att); !errors.Is(err, context.Canceled) {
		t.Fatalf("first attempt: %v", err)
	}
	if att.task.AgentTaskID != "job-1" || len(att.placed) != 1 || a.Submits("job-1") != 1 {
		t.Fatalf("after first attempt: %+v, placed %v, submits %d", att.task, att.placed, a.Submits("job-1"))
	}

	// Redelivery with the agent task id recorded: polled, not submitted.
	att.onProg = nil
	vm := testVM()
	vm.Status.Node, vm.Status.Phase = "n1", messages.PhaseCreating
	out, err := e.Run(t.Context(), j, vm, att)
	if err != nil || out.Status == nil || out.Status.Phase != messages.PhaseRunning || out.Status.Node != "n1" || out.Fail != nil || out.Retry != nil {
		t.Fatalf("redelivered attempt: %+v %v", out, err)
	}
	if a.Submits("job-1") != 1 || len(att.placed) != 1 {
		t.Fatalf("redelivery submitted again (%d) or placed again (%v)", a.Submits("job-1"), att.placed)
	}

	// A crash before the id was recorded: submitted again, same task.
	fresh := &fakeAttempt{task: messages.Task{ID: "task-1"}}
	out, err = e.Run(t.Context(), j, vm, fresh)
	if err != nil || out.Status == nil || out.Status.Phase != messages.PhaseRunning {
		t.Fatalf("resubmitted attempt: %+v %v", out, err)
	}
	if a.Submits("job-1") != 2 || fresh.task.AgentTaskID != "job-1" {
		t.Fatalf("resubmission: submits %d, agent task %q", a.Submits("job-1"), fresh.task.AgentTaskID)
	}
}

func TestNodeNotReadyIsRetried(t *testing.T) {
	e := job.Executor{Placer: job.NoNodes{}, Agent: job.NoAgent{},
		Nodes: fakeNodes{"n1": {Name: "n1", Phase: messages.NodeUnreachable, Endpoint: "https://n1:1"}}}
	vm := testVM()
	vm.Status.Node = "n1"
	for _, kind := range []string{messages.TaskVMStart, messages.TaskVMStop, messages.TaskVMDelete, messages.TaskVMReboot, messages.TaskVMPoweroff} {
		out, err := e.Run(t.Context(), &messages.Job{ID: "j", Kind: kind}, vm, &fakeAttempt{})
		if err != nil || out.Retry == nil || out.Retry.Code != "node_unreachable" {
			t.Fatalf("%s: %+v %v", kind, out, err)
		}
	}
	// Never placed: no placement, no agent.
	out, _ := e.Run(t.Context(), &messages.Job{ID: "j", Kind: messages.TaskVMCreate}, testVM(), &fakeAttempt{})
	if out.Retry == nil || out.Retry.Code != "no_schedulable_node" {
		t.Fatalf("create without nodes: %+v", out)
	}
	out, _ = e.Run(t.Context(), &messages.Job{ID: "j", Kind: messages.TaskVMPoweroff}, testVM(), &fakeAttempt{})
	if out.Status == nil || out.Status.Phase != messages.PhaseStopped || out.Power != messages.PowerStopped {
		t.Fatalf("poweroff of a never-placed vm: %+v", out)
	}
}

// TestStartOfUncreatedVMCreatesIt: a start of a VM no node has yet asks the
// agent for a create (the spec says running), and succeeds as a start.
func TestStartOfUncreatedVMCreatesIt(t *testing.T) {
	p := agenttest.NewPKI(t)
	kinds := make(chan string, 4)
	a := agenttest.Start(t, p, "n1", func(req messages.AgentTaskRequest) agenttest.Result {
		kinds <- req.Kind
		return agenttest.Succeed(req)
	})
	cert := p.ClientCert(t)
	e := job.Executor{Placer: placeOn("n1"), Nodes: fakeNodes{"n1": {Name: "n1", Phase: messages.NodeReady, Endpoint: a.URL}},
		Agent: agentclient.New(p.CA.Pool(), func() (*tls.Certificate, error) { return &cert, nil })}
	vm := testVM()
	vm.Status.Phase = messages.PhaseStopped // a cancelled create: stopped, on no node
	out, err := e.Run(t.Context(), &messages.Job{ID: "j-start", Kind: messages.TaskVMStart}, vm, &fakeAttempt{})
	if err != nil || out.Status == nil || out.Status.Phase != messages.PhaseRunning || out.Power != messages.PowerRunning || out.Node != "n1" {
		t.Fatalf("start: %+v %v", out, err)
	}
	if k := <-kinds; k != messages.TaskVMCreate {
		t.Fatalf("agent asked for %s, want vm.create", k)
	}
	// Placed and created: a start is a start.
	vm.Status.Node, vm.Status.Phase = "n1", messages.PhaseStopped
	if _, err := e.Run(t.Context(), &messages.Job{ID: "j-start2", Kind: messages.TaskVMStart}, vm, &fakeAttempt{}); err != nil {
		t.Fatal(err)
	}
	if k := <-kinds; k != messages.TaskVMStart {
		t.Fatalf("agent asked for %s, want vm.start", k)
	}
}
