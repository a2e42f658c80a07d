package placement

import (
	"context"
	"fmt"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Schedulable refuses, at create, a VM that no node of the cluster could
// host even with nothing else on it; see CanEverHost. It reads the nodes at
// most every nodesMaxAge and admits on that view when it has a node to
// judge by; a refusal is always decided on a fresh read, so a node that
// just joined or grew is never missed.
func (p *Placer) Schedulable(ctx context.Context, vm *messages.VM) error {
	nodes, fresh, err := p.sizedNodes(ctx, false)
	if err != nil {
		return err
	}
	err = CanEverHost(p.cfg, vm, nodes)
	switch {
	case fresh || (err == nil && len(counted(vm, nodes)) > 0):
		return err
	case err == nil:
		// Admitted for want of any node to judge by: the first nodes
		// may have reported since. A local read says (an empty cluster
		// pays no consensus round per create).
		local, err := p.st.NodesLocal(ctx)
		if err != nil {
			return err
		}
		return CanEverHost(p.cfg, vm, local)
	}
	// A refusal is decided on a fresh read.
	if nodes, _, err = p.sizedNodes(ctx, true); err != nil {
		return err
	}
	return CanEverHost(p.cfg, vm, nodes)
}

// nodesMaxAge bounds how old a node list may be for admitting a create:
// reading every node on every create would cost a cluster of thousands of
// nodes megabytes per request, and node sizes change rarely.
const nodesMaxAge = 2 * time.Second

// sizedNodes returns the nodes, read now when force or when the cached
// list is older than nodesMaxAge; fresh says it was read now.
func (p *Placer) sizedNodes(ctx context.Context, force bool) (nodes []*messages.Node, fresh bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !force && !p.nodesAt.IsZero() && time.Since(p.nodesAt) < nodesMaxAge {
		return p.nodes, false, nil
	}
	nodes, err = listAll(ctx, func(pg store.Page) ([]*messages.Node, string, error) { return p.st.ListNodes(ctx, pg) })
	if err != nil {
		return nil, false, err
	}
	p.nodes, p.nodesAt = nodes, time.Now()
	return nodes, true, nil
}

// CanEverHost answers unschedulable (422) when no node in nodes could host
// vm even empty: more CPUs, memory or disk than any node of its
// architecture offers after the overcommit ratios, or an architecture no
// node has. Every node that has reported its capacity counts, ready or not,
// cordoned or not: those states pass, a node's size does not. Everything
// that can pass is left to placement, which retries: a cluster with no node
// that reported yet (nodes may be joining), a spec.node not enrolled yet,
// nodes that are full now.
func CanEverHost(cfg Config, vm *messages.VM, nodes []*messages.Node) error {
	cfg = cfg.withDefaults()
	w := wantOf(vm)
	sized := counted(vm, nodes)
	if len(sized) == 0 {
		return nil
	}
	where := "any node"
	if vm.Spec.Node != "" {
		where = "node " + vm.Spec.Node
	}
	var ofArch []*messages.Node
	for _, n := range sized {
		if n.Arch == w.arch {
			ofArch = append(ofArch, n)
		}
	}
	if len(ofArch) == 0 {
		why := fmt.Sprintf("the vm is %s and no node is", w.arch)
		if vm.Spec.Node != "" {
			why = fmt.Sprintf("the vm is %s and node %s is %s", w.arch, vm.Spec.Node, sized[0].Arch)
		}
		return unschedulable("arch", why, w.arch, nil)
	}
	// The largest offer of each resource, for a message that says how far
	// off the request is.
	var maxCPU, maxMem, maxDisk int64
	for _, n := range ofArch {
		c := n.Status.Capacity
		maxCPU = max(maxCPU, offered(int64(c.CPUs), cfg.CPUOvercommit))
		maxMem = max(maxMem, offered(c.MemoryMiB, cfg.MemoryOvercommit))
		if total, _, ok := poolSpace(n); ok {
			maxDisk = max(maxDisk, offered(total/gib, cfg.DiskOvercommit))
		}
	}
	switch {
	case int64(w.cpus) > maxCPU:
		return unschedulable("cpus", fmt.Sprintf("the vm asks %d CPUs, %s of %s offers at most %d", w.cpus, where, w.arch, maxCPU), w.cpus, maxCPU)
	case w.mem > maxMem:
		return unschedulable("memory_mib", fmt.Sprintf("the vm asks %d MiB, %s of %s offers at most %d", w.mem, where, w.arch, maxMem), w.mem, maxMem)
	case w.diskGiB > maxDisk:
		return unschedulable("disk_gib", fmt.Sprintf("the vm asks %d GiB of disk, the pool of %s of %s offers at most %d", w.diskGiB, where, w.arch, maxDisk), w.diskGiB, maxDisk)
	}
	// Each resource fits somewhere; the three together must fit one node.
	for _, n := range ofArch {
		c := n.Status.Capacity
		total, _, _ := poolSpace(n)
		if int64(w.cpus) <= offered(int64(c.CPUs), cfg.CPUOvercommit) && w.mem <= offered(c.MemoryMiB, cfg.MemoryOvercommit) &&
			w.diskGiB <= offered(total/gib, cfg.DiskOvercommit) {
			return nil
		}
	}
	return unschedulable("cpus,memory_mib,disk_gib", fmt.Sprintf("no single %s node offers %d CPUs, %d MiB and %d GiB of disk together",
		w.arch, w.cpus, w.mem, w.diskGiB), nil, nil)
}

// counted are the nodes whose size judges vm: those that reported a
// capacity and are not gone, only the one spec.node names if it names one.
func counted(vm *messages.VM, nodes []*messages.Node) []*messages.Node {
	var sized []*messages.Node
	for _, n := range nodes {
		if n.Status.Capacity != nil && n.Phase != messages.NodeGone && (vm.Spec.Node == "" || n.Name == vm.Spec.Node) {
			sized = append(sized, n)
		}
	}
	return sized
}

func unschedulable(resource, why string, requested, limit any) *messages.Error {
	e := messages.Errorf(messages.KindUnprocessable, CodeUnschedulable, "no node can ever host this vm: %s", why).
		WithDetail("resource", resource)
	if requested != nil {
		e = e.WithDetail("requested", requested)
	}
	if limit != nil {
		e = e.WithDetail("limit", limit)
	}
	return e
}
