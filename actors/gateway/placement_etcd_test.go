//go:build etcd

package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/actors/placement"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

// instantAgent is every node's agent, finishing each task at once: the far
// side of the boundary under test (placement), standing in for QEMU.
type instantAgent struct{}

func (instantAgent) Submit(_ context.Context, _ agentclient.Node, req messages.AgentTaskRequest) (*messages.AgentTask, error) {
	now := time.Now().UTC()
	return &messages.AgentTask{ID: req.ID, Kind: req.Kind, VMID: req.VM.ID, State: messages.TaskSuccess, Progress: 100,
		VM:        &messages.VMObserved{ID: req.VM.ID, Phase: messages.PhaseRunning, ObservedGeneration: req.VM.Generation, ObservedAt: now},
		CreatedAt: now, UpdatedAt: now, FinishedAt: &now}, nil
}

func (instantAgent) Task(_ context.Context, _ agentclient.Node, id string, _ time.Duration) (*messages.AgentTask, error) {
	// Nothing is remembered: the executor submits again under the same id.
	return nil, messages.NotFound("task", id)
}

// startReplicas starts n gateways over one etcd member, each with a store
// of its own (so no lock of one process serializes them) and a dispatcher
// that claims any replica's jobs: n replicas of one control plane.
func startReplicas(t *testing.T, n int) ([]*gateway.Gateway, *store.Store) {
	t.Helper()
	base := storetest.New(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var gs []*gateway.Gateway
	for i := range n {
		st := store.New(base.Client(), store.WithMaxTxnOps(base.MaxTxnOps()))
		cfg := gateway.Config{Replica: fmt.Sprintf("replica-%d", i), Agent: instantAgent{}, JobAttempts: 3,
			ClaimTTL: 5 * time.Second, JobBackoffBase: 10 * time.Millisecond, JobBackoffMax: 40 * time.Millisecond,
			AskTimeout: 20 * time.Second, CleanupInterval: time.Hour, Nodes: gateway.NodesConfig{HeartbeatInterval: time.Hour}}
		g, err := gateway.Start(t.Context(), st, cfg, log)
		if err != nil {
			t.Fatalf("start replica %d: %v", i, err)
		}
		t.Cleanup(g.Close)
		gs = append(gs, g)
	}
	return gs, base
}

// addReadyNode writes a ready node that reported capacity and its pool.
func addReadyNode(t *testing.T, st *store.Store, name string, cpus int, memMiB, diskGiB int64) {
	t.Helper()
	now := time.Now().UTC()
	n := &messages.Node{ID: messages.NewID(), Name: name, Phase: messages.NodeReady, Arch: messages.ArchAMD64,
		Endpoint: "https://" + name + ".invalid:7444", EnrolledAt: now, UpdatedAt: now,
		Status: messages.NodeStatus{Capacity: &messages.NodeCapacity{CPUs: cpus, MemoryMiB: memMiB},
			Pools: []messages.PoolStatus{{Name: placement.PoolName, Path: "/pool", TotalBytes: diskGiB << 30, FreeBytes: diskGiB << 30}}}}
	if err := st.Commit(t.Context(), store.CreateNode(store.NewTxn(), n)); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentPlacementsNeverOvercommit is the property: N creates of
// random sizes, sent at once through 3 replicas, against one node that fits
// only some. Whatever the interleaving, what is placed on the node stays
// within its capacity × overcommit; every create that is refused says
// insufficient_capacity and names a resource that really is short; and the
// node's allocation document equals a recount of the VM rows.
func TestConcurrentPlacementsNeverOvercommit(t *testing.T) {
	const creates, nodeCPUs, nodeMem, nodeDisk = 40, 2, 4096, 40
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	gs, st := startReplicas(t, 3)
	addReadyNode(t, st, "small", nodeCPUs, nodeMem, nodeDisk)
	cfg := placement.DefaultConfig()
	limit := map[string]int64{
		placement.ResourceCPUs:   int64(nodeCPUs * cfg.CPUOvercommit),
		placement.ResourceMemory: int64(nodeMem * cfg.MemoryOvercommit),
		placement.ResourceDisk:   int64(nodeDisk * cfg.DiskOvercommit),
	}
	specs := make([]messages.VMSpec, creates)
	for i := range specs {
		specs[i] = messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"},
			CPUs: 1 + rng.IntN(2), MemoryMiB: 256 * (1 + rng.IntN(4)), DiskGiB: 1 + rng.IntN(12)}
	}

	type created struct {
		vm   *messages.VM
		task *messages.Task
		via  *gateway.Gateway
	}
	out := make([]created, creates)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, creates)
	for i := range creates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			g := gs[i%len(gs)]
			vm, task, err := g.CreateVM(t.Context(), owner, messages.CreateVMRequest{Name: fmt.Sprintf("p-%02d", i), Spec: specs[i]})
			if err != nil {
				errs <- fmt.Errorf("create %d: %w", i, err)
				return
			}
			out[i] = created{vm: vm, task: task, via: g}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	placed := map[string]int64{}
	type refusal struct {
		spec messages.VMSpec
		err  *messages.TaskError
	}
	var refused []refusal
	for i, c := range out {
		// Waited through another replica than the one that took it.
		g := gs[(i+1)%len(gs)]
		task, err := g.WaitTask(ctx, owner, c.task.ID)
		if err != nil || !messages.Terminal(task.State) {
			t.Fatalf("create %d: task %v %v, want it ended", i, task, err)
		}
		vm, err := g.GetVM(ctx, owner, c.vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch task.State {
		case messages.TaskSuccess:
			if vm.Status.Node != "small" {
				t.Fatalf("create %d succeeded on node %q", i, vm.Status.Node)
			}
			placed[placement.ResourceCPUs] += int64(vm.Spec.CPUs)
			placed[placement.ResourceMemory] += int64(vm.Spec.MemoryMiB)
			placed[placement.ResourceDisk] += int64(vm.Spec.DiskGiB)
		default:
			e := task.Error
			if e == nil || e.Code != messages.CodeInsufficientCapacity {
				t.Fatalf("create %d ended %s with %+v, want success or %s", i, task.State, e, messages.CodeInsufficientCapacity)
			}
			if vm.Status.Node != "" {
				t.Fatalf("refused create %d left the vm on node %q", i, vm.Status.Node)
			}
			refused = append(refused, refusal{spec: vm.Spec, err: e})
		}
	}
	for r, used := range placed {
		if used > limit[r] {
			t.Errorf("node overcommitted: %d %s placed, capacity × overcommit is %d", used, r, limit[r])
		}
	}
	// The node only fills up during the run, so the resource a refusal
	// named was short then and is short at the end.
	size := func(s messages.VMSpec, r string) int64 {
		return map[string]int64{placement.ResourceCPUs: int64(s.CPUs), placement.ResourceMemory: int64(s.MemoryMiB),
			placement.ResourceDisk: int64(s.DiskGiB)}[r]
	}
	for _, r := range refused {
		res, _ := r.err.Details["resource"].(string)
		if res == "" || strings.Contains(res, ",") {
			t.Fatalf("refusal %+v names resource %q, want one of cpus, memory_mib, disk_gib", r.err, res)
		}
		if _, ok := limit[res]; !ok {
			t.Fatalf("refusal names unknown resource %q", res)
		}
		if placed[res]+size(r.spec, res) <= limit[res] {
			t.Errorf("refusal of %+v names %s, but %d placed + %d asked fits %d", r.spec, res, placed[res], size(r.spec, res), limit[res])
		}
	}
	if len(refused) == 0 || len(refused) == creates {
		t.Errorf("%d of %d creates refused: the node should fit some and not all", len(refused), creates)
	}
	drift, _, err := st.CheckAllocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drift {
		t.Errorf("allocation of node %s drifted: stored %+v, the vm rows count %+v", d.Node, d.Stored, d.Counted)
	}
	doc, err := st.Allocation(ctx, "small")
	if err != nil {
		t.Fatal(err)
	}
	if doc.CPUs != placed[placement.ResourceCPUs] || doc.MemoryMiB != placed[placement.ResourceMemory] || doc.DiskGiB != placed[placement.ResourceDisk] ||
		len(doc.VMs) != creates-len(refused) {
		t.Errorf("allocation document %+v, want what the %d created vms use: %v", doc, creates-len(refused), placed)
	}
	t.Logf("%d placed (%v of %v), %d refused", creates-len(refused), placed, limit, len(refused))
}

// TestAllocationFollowsResizeAndDelete: the node's allocation document moves
// with every change of a placed VM: a resize the node can take, a resize it
// cannot (refused with insufficient_capacity, nothing written) and the
// delete that releases it.
func TestAllocationFollowsResizeAndDelete(t *testing.T) {
	gs, st := startReplicas(t, 1)
	g := gs[0]
	ctx := t.Context()
	addReadyNode(t, st, "n", 1, 2048, 20) // 4 vCPUs after overcommit
	vm, task, err := g.CreateVM(ctx, owner, messages.CreateVMRequest{Name: "r",
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}, CPUs: 1, MemoryMiB: 512, DiskGiB: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if done := waitTask(t, g, task.ID); done.State != messages.TaskSuccess {
		t.Fatalf("create = %s %+v", done.State, done.Error)
	}
	check := func(cpus, mem, disk int64, vms int) {
		t.Helper()
		doc, err := st.Allocation(ctx, "n")
		if err != nil || doc.CPUs != cpus || doc.MemoryMiB != mem || doc.DiskGiB != disk || len(doc.VMs) != vms {
			t.Fatalf("allocation %+v %v, want %d cpus, %d MiB, %d GiB, %d vms", doc, err, cpus, mem, disk, vms)
		}
		if drift, _, err := st.CheckAllocations(ctx); err != nil || len(drift) != 0 {
			t.Fatalf("drift %+v %v", drift, err)
		}
	}
	check(1, 512, 5, 1)
	cpus, mem := 4, 1024
	if _, err := g.UpdateVM(ctx, owner, vm.ID, messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &cpus, MemoryMiB: &mem}}); err != nil {
		t.Fatalf("resize within the node: %v", err)
	}
	check(4, 1024, 5, 1)
	cpus = 5
	_, err = g.UpdateVM(ctx, owner, vm.ID, messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &cpus}})
	e := wantCode(t, err, messages.CodeInsufficientCapacity)
	if e.Kind != messages.KindConflict || e.Details["resource"] != placement.ResourceCPUs || e.Details["node"] != "n" {
		t.Fatalf("refused resize: %+v", e)
	}
	if got := getVM(t, g, vm.ID); got.Spec.CPUs != 4 {
		t.Fatalf("refused resize wrote %d cpus", got.Spec.CPUs)
	}
	check(4, 1024, 5, 1)
	_, del, err := g.VMTask(ctx, owner, vm.ID, messages.TaskVMDelete, true)
	if err != nil {
		t.Fatal(err)
	}
	if done := waitTask(t, g, del.ID); done.State != messages.TaskSuccess {
		t.Fatalf("delete = %s %+v", done.State, done.Error)
	}
	check(0, 0, 0, 0)
}
