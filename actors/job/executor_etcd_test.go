//go:build etcd

package job_test

import (
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/job"
	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/actors/placement"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/actors/vm"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

// env is a control plane without HTTP: the vms, nodes and jobs guardians
// over a real etcd member, calling fake agents over mutual TLS.
type env struct {
	t     testing.TB
	st    *store.Store
	rt    *system.Runtime
	vms   *actor.PID
	nodes *actor.PID
	jobs  *actor.PID
	// halt stops rt once: at cleanup, or earlier in stop.
	halt sync.Once
	pki  *agenttest.PKI
	boot time.Time
}

const attempts = 3

func start(t *testing.T) *env {
	t.Helper()
	return startOn(t, storetest.New(t), func(*vm.Deps, *job.Config) {})
}

// startOn is start over st, a store another control plane may have used
// before, with tune changing the defaults.
func startOn(t *testing.T, st *store.Store, tune func(*vm.Deps, *job.Config)) *env {
	t.Helper()
	return startWith(t, st, agenttest.NewPKI(t), tune)
}

// startWith is startOn with the agents' PKI given, for replicas that must
// call the same fake agents.
func startWith(t testing.TB, st *store.Store, pki *agenttest.PKI, tune func(*vm.Deps, *job.Config)) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	rt := system.NewRuntime(log)
	e := &env{t: t, st: st, rt: rt, pki: pki, boot: time.Now()}
	t.Cleanup(func() { e.halt.Do(rt.Stop) })
	root := rt.System.Root
	var err error
	vmDeps := vm.Deps{Runtime: rt, Store: st, Log: log, PassivateAfter: time.Minute, JobAttempts: attempts}
	cfg := job.Config{Replica: "r1", ClaimTTL: 5 * time.Second, Resync: time.Minute,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond, AskTimeout: 5 * time.Second}
	tune(&vmDeps, &cfg)
	e.vms, err = root.SpawnNamed(system.NewGuardian(rt, "vm", func(id string) *actor.Props { return vm.Props(vmDeps, id) }, nil), "vms")
	if err != nil {
		t.Fatal(err)
	}
	nodeDeps := node.Deps{Runtime: rt, Store: st, Log: log, VMs: e.vms,
		Config: node.Config{Interval: 10 * time.Second, GoneAfter: 5 * time.Minute, Boot: e.boot}}
	e.nodes, err = root.SpawnNamed(system.NewGuardian(rt, "node", func(id string) *actor.Props { return node.Props(nodeDeps, id) }, nil), "nodes")
	if err != nil {
		t.Fatal(err)
	}
	cert := e.pki.ClientCert(t)
	agents := agentclient.New(e.pki.CA.Pool(), func() (*tls.Certificate, error) { return &cert, nil })
	deps := job.Deps{Runtime: rt, Store: st, Log: log, VMs: e.vms,
		Executor: job.Executor{Placer: placement.New(st, placement.DefaultConfig()), Agent: agents, Nodes: st, PollWait: 2 * time.Second},
		Config:   cfg}
	if e.jobs, err = root.SpawnNamed(system.NewGuardian(rt, "job", job.JobProps(deps), func(ctx actor.Context) {
		if _, err := ctx.SpawnNamed(job.DispatcherProps(deps), "dispatcher"); err != nil {
			panic(err)
		}
	}), "jobs"); err != nil {
		t.Fatal(err)
	}
	return e
}

// stop shuts this control plane down as a replica does: jobs first, so the
// dispatcher revokes its lease and its claims go at once.
func (e *env) stop() {
	e.t.Helper()
	for _, pid := range []*actor.PID{e.jobs, e.vms, e.nodes} {
		if err := e.rt.System.Root.StopFuture(pid).Wait(); err != nil {
			e.t.Fatal(err)
		}
	}
	e.halt.Do(e.rt.Stop)
}

// addNode enrolls a node and sends its first heartbeat with endpoint.
func (e *env) addNode(name, endpoint string) string {
	e.t.Helper()
	n := &messages.Node{ID: messages.NewID(), Name: name, Phase: messages.NodePending, EnrolledAt: e.boot}
	if err := e.st.Commit(e.t.Context(), store.CreateNode(store.NewTxn(), n)); err != nil {
		e.t.Fatal(err)
	}
	got := e.heartbeat(n.ID, endpoint, e.boot)
	if got.Phase != messages.NodeReady || got.Endpoint != endpoint {
		e.t.Fatalf("node after heartbeat: %+v", got)
	}
	return n.ID
}

func (e *env) heartbeat(id, endpoint string, now time.Time, vms ...messages.VMObserved) *messages.Node {
	e.t.Helper()
	return e.askNode(id, node.Heartbeat{Now: now, Observed: messages.Heartbeat{AgentVersion: "1", Endpoint: endpoint, Arch: "amd64",
		Capacity: messages.NodeCapacity{CPUs: 4, MemoryMiB: 8192, Accelerator: "kvm"}, VMs: vms,
		Pools: []messages.PoolStatus{{Name: "default", Path: "/pool", TotalBytes: 100 << 30, FreeBytes: 100 << 30}}}})
}

func (e *env) askNode(id string, msg any) *messages.Node {
	e.t.Helper()
	res, err := e.rt.System.Root.RequestFuture(e.nodes, system.Deliver{ID: id, Msg: msg}, 5*time.Second).Result()
	if err != nil {
		e.t.Fatalf("ask node %T: %v", msg, err)
	}
	r := res.(node.Reply)
	if r.Err != nil {
		e.t.Fatalf("node %T: %v", msg, r.Err)
	}
	return r.Node
}

func (e *env) askVM(id string, msg any) messages.VMReply {
	e.t.Helper()
	res, err := e.rt.System.Root.RequestFuture(e.vms, system.Deliver{ID: id, Msg: msg}, 5*time.Second).Result()
	if err != nil {
		e.t.Fatalf("ask vm %T: %v", msg, err)
	}
	return res.(messages.VMReply)
}

func (e *env) createVM(name string) (*messages.VM, *messages.Task) {
	e.t.Helper()
	r := e.askVM(messages.NewID(), messages.CreateVM{Owner: "u1", Name: name, Spec: messages.VMSpec{
		Image: messages.ImageSource{URL: "https://images.example/noble.qcow2"}, CPUs: 2, MemoryMiB: 1024}})
	if r.Err != nil {
		e.t.Fatal(r.Err)
	}
	return r.VM, r.Task
}

func (e *env) request(vmID, kind string, force bool) *messages.Task {
	e.t.Helper()
	r := e.askVM(vmID, messages.RequestVMTask{Kind: kind, Force: force, TimeoutSeconds: 7})
	if r.Err != nil {
		e.t.Fatalf("%s: %v", kind, r.Err)
	}
	return r.Task
}

func (e *env) waitTask(id string) *messages.Task {
	e.t.Helper()
	var task *messages.Task
	testutil.Eventually(e.t, 20*time.Second, 10*time.Millisecond, "task "+id, func() bool {
		got, err := e.st.GetTask(e.t.Context(), id)
		task = got
		return err == nil && messages.Terminal(got.State)
	})
	return task
}

func (e *env) vm(id string) *messages.VM {
	e.t.Helper()
	v, err := e.st.GetVM(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func TestCreatePlacesAndRunsOnAgent(t *testing.T) {
	e := start(t)
	var seen []messages.AgentTaskRequest
	seenCh := make(chan messages.AgentTaskRequest, 16)
	a := agenttest.Start(t, e.pki, "n1", func(req messages.AgentTaskRequest) agenttest.Result {
		seenCh <- req
		return agenttest.Result{VM: agenttest.VMAfter(req), After: 100 * time.Millisecond}
	})
	e.addNode("n1", a.URL)
	v, task := e.createVM("web")
	done := e.waitTask(task.ID)
	if done.State != messages.TaskSuccess || done.AgentTaskID != done.JobID || done.AgentTaskID == "" {
		t.Fatalf("create task: %+v", done)
	}
	got := e.vm(v.ID)
	st := got.Status
	if st.Node != "n1" || st.Phase != messages.PhaseRunning || st.Pid != 4242 || st.StartedAt == nil || st.ObservedAt == nil ||
		st.ObservedGeneration != 1 || st.ActiveTask != "" {
		t.Fatalf("vm after create: %+v", st)
	}
	if n := a.Submits(done.JobID); n != 1 {
		t.Fatalf("submits of %s: %d", done.JobID, n)
	}
	seen = append(seen, <-seenCh)
	if r := seen[0]; r.Kind != messages.TaskVMCreate || r.VM.ID != v.ID || r.VM.Name != "web" || r.VM.Generation != 1 ||
		r.VM.Spec.Arch != messages.ArchAMD64 || r.VM.Spec.CPUs != 2 {
		t.Fatalf("agent request: %+v", r)
	}

	// Stop, reboot refused while stopped, start, reboot, then delete with force.
	stop := e.waitTask(e.request(v.ID, messages.TaskVMStop, false).ID)
	if r := <-seenCh; stop.State != messages.TaskSuccess || r.TimeoutSeconds != 7 || r.Kind != messages.TaskVMStop {
		t.Fatalf("stop: %+v, request %+v", stop, r)
	}
	if got := e.vm(v.ID); got.Status.Phase != messages.PhaseStopped || got.Spec.PowerState != messages.PowerStopped || got.Status.Node != "n1" {
		t.Fatalf("after stop: %+v %+v", got.Spec, got.Status)
	}
	if r := e.askVM(v.ID, messages.RequestVMTask{Kind: messages.TaskVMReboot}); messages.KindOf(r.Err) != messages.KindConflict {
		t.Fatalf("reboot of a stopped vm: %v", r.Err)
	}
	start := e.waitTask(e.request(v.ID, messages.TaskVMStart, false).ID)
	<-seenCh
	if got := e.vm(v.ID); start.State != messages.TaskSuccess || got.Status.Phase != messages.PhaseRunning || got.Spec.PowerState != messages.PowerRunning {
		t.Fatalf("after start: %+v %+v", start, got.Status)
	}
	reboot := e.waitTask(e.request(v.ID, messages.TaskVMReboot, true).ID)
	if r := <-seenCh; reboot.State != messages.TaskSuccess || !r.Force || r.Kind != messages.TaskVMReboot {
		t.Fatalf("reboot: %+v, request %+v", reboot, r)
	}
	if got := e.vm(v.ID); got.Spec.PowerState != messages.PowerRunning {
		t.Fatalf("reboot changed power: %+v", got.Spec)
	}
	if r := e.askVM(v.ID, messages.RequestVMTask{Kind: messages.TaskVMDelete}); messages.KindOf(r.Err) != messages.KindConflict {
		t.Fatalf("delete of a running vm without force: %v", r.Err)
	}
	del := e.waitTask(e.request(v.ID, messages.TaskVMDelete, true).ID)
	if r := <-seenCh; del.State != messages.TaskSuccess || !r.Force {
		t.Fatalf("delete: %+v, request %+v", del, r)
	}
	if _, err := e.st.GetVM(t.Context(), v.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("vm after delete: %v", err)
	}
}

func TestAgentFailureFailsWithoutRetry(t *testing.T) {
	e := start(t)
	a := agenttest.Start(t, e.pki, "n1", func(req messages.AgentTaskRequest) agenttest.Result {
		return agenttest.Result{Err: &messages.TaskError{Code: "image_checksum_mismatch", Message: "sha256 of noble.qcow2 is not the one asked for"}}
	})
	e.addNode("n1", a.URL)
	v, task := e.createVM("bad")
	done := e.waitTask(task.ID)
	if done.State != messages.TaskFailed || done.Error == nil || done.Error.Code != "image_checksum_mismatch" {
		t.Fatalf("task: %+v %+v", done, done.Error)
	}
	if n := a.Submits(done.JobID); n != 1 {
		t.Fatalf("agent failure was retried: %d submits", n)
	}
	st := e.vm(v.ID).Status
	if st.Phase != messages.PhaseFailed || st.Node != "n1" || st.Message == "" || st.ActiveTask != "" {
		t.Fatalf("vm: %+v", st)
	}
	if _, err := e.st.GetTask(t.Context(), task.ID); err != nil {
		t.Fatal(err)
	}
}

func TestAgentUnreachableRetriesThenFails(t *testing.T) {
	e := start(t)
	a := agenttest.Start(t, e.pki, "n1", nil)
	endpoint := a.URL
	a.Close() // nothing listens there any more
	e.addNode("n1", endpoint)
	v, task := e.createVM("far")
	done := e.waitTask(task.ID)
	if done.State != messages.TaskFailed || done.Error == nil || done.Error.Code != "node_unreachable" {
		t.Fatalf("task: %+v %+v", done, done.Error)
	}
	if want := "gave up after 3 attempts"; done.Message != want {
		t.Fatalf("message %q, want %q", done.Message, want)
	}
	st := e.vm(v.ID).Status
	// Placed before the agent was called, and kept: the control plane knows
	// where the VM may have been started.
	if st.Node != "n1" || st.Phase != messages.PhaseFailed {
		t.Fatalf("vm: %+v", st)
	}
}

func TestNoNodeFailsWithReason(t *testing.T) {
	e := start(t)
	_, task := e.createVM("nowhere")
	done := e.waitTask(task.ID)
	if done.State != messages.TaskFailed || done.Error == nil || done.Error.Code != "no_schedulable_node" {
		t.Fatalf("task: %+v %+v", done, done.Error)
	}
}

func TestHeartbeatObservationAndNodeGone(t *testing.T) {
	e := start(t)
	a := agenttest.Start(t, e.pki, "n1", nil)
	nodeID := e.addNode("n1", a.URL)
	v, task := e.createVM("watched")
	if done := e.waitTask(task.ID); done.State != messages.TaskSuccess {
		t.Fatalf("create: %+v", done)
	}
	base := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
	now := e.boot

	// The guest powered itself off: the next heartbeat says so.
	now = now.Add(10 * time.Second)
	e.heartbeat(nodeID, a.URL, now, messages.VMObserved{ID: v.ID, Phase: messages.PhaseStopped, ObservedGeneration: 1, ObservedAt: base})
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, "vm stopped by observation", func() bool {
		st := e.vm(v.ID).Status
		return st.Phase == messages.PhaseStopped && st.Pid == 0 && st.ObservedAt != nil && st.ObservedAt.Equal(base)
	})
	// An older observation is ignored.
	now = now.Add(10 * time.Second)
	e.heartbeat(nodeID, a.URL, now, messages.VMObserved{ID: v.ID, Phase: messages.PhaseRunning, Pid: 9, ObservedAt: base.Add(-time.Hour)})
	// A newer one is applied; ordering with the previous is by the VM's
	// mailbox, so once it shows, the older one was already refused.
	started := base.Add(2 * time.Second)
	now = now.Add(10 * time.Second)
	e.heartbeat(nodeID, a.URL, now, messages.VMObserved{ID: v.ID, Phase: messages.PhaseRunning, Pid: 77, StartedAt: &started, ObservedGeneration: 1, ObservedAt: base.Add(3 * time.Second)})
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, "vm running by observation", func() bool {
		st := e.vm(v.ID).Status
		return st.Phase == messages.PhaseRunning && st.Pid == 77
	})
	resp, err := e.st.Client().Get(t.Context(), store.RowKey(store.VMs, v.ID))
	if err != nil {
		t.Fatal(err)
	}
	version := resp.Kvs[0].Version
	// The same observation again, only later: nothing is written.
	now = now.Add(10 * time.Second)
	e.heartbeat(nodeID, a.URL, now, messages.VMObserved{ID: v.ID, Phase: messages.PhaseRunning, Pid: 77, StartedAt: &started, ObservedGeneration: 1, ObservedAt: base.Add(13 * time.Second)})
	if r := e.askVM(v.ID, messages.GetVM{}); r.Err != nil { // a round trip through the VM's mailbox
		t.Fatal(r.Err)
	}
	resp, _ = e.st.Client().Get(t.Context(), store.RowKey(store.VMs, v.ID))
	if resp.Kvs[0].Version != version {
		t.Fatalf("an unchanged observation wrote the vm: version %d → %d", version, resp.Kvs[0].Version)
	}

	// The node falls silent: unreachable, then gone; its VM is unknown.
	if n := e.askNode(nodeID, node.CheckLiveness{Now: now.Add(31 * time.Second)}); n.Phase != messages.NodeUnreachable {
		t.Fatalf("node: %s", n.Phase)
	}
	if n := e.askNode(nodeID, node.CheckLiveness{Now: now.Add(6 * time.Minute)}); n.Phase != messages.NodeGone {
		t.Fatalf("node: %s", n.Phase)
	}
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, "vm unknown", func() bool {
		st := e.vm(v.ID).Status
		return st.Phase == messages.PhaseUnknown && st.Node == "n1" && st.Message != ""
	})
	// A start while the node is gone is retried as unreachable, then fails.
	startTask := e.waitTask(e.request(v.ID, messages.TaskVMStart, false).ID)
	if startTask.Error == nil || startTask.Error.Code != "node_unreachable" {
		t.Fatalf("start on a gone node: %+v", startTask)
	}
	// It comes back with the same observation as before it went: healed.
	now = now.Add(7 * time.Minute)
	e.heartbeat(nodeID, a.URL, now, messages.VMObserved{ID: v.ID, Phase: messages.PhaseRunning, Pid: 77, StartedAt: &started, ObservedGeneration: 1, ObservedAt: base.Add(time.Hour)})
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, "vm healed", func() bool {
		st := e.vm(v.ID).Status
		return st.Phase == messages.PhaseRunning && st.Pid == 77
	})
}
