// Package placement chooses the node a VM runs on, from the nodes and VMs in
// the store.
package placement

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Config holds the overcommit ratios: a node offers capacity × ratio.
type Config struct {
	// CPUOvercommit is how many vCPUs a node offers per CPU (default 4).
	CPUOvercommit float64 `koanf:"cpu_overcommit"`
	// MemoryOvercommit is how many MiB of guest memory a node offers per MiB
	// (default 1: memory is not overcommitted).
	MemoryOvercommit float64 `koanf:"memory_overcommit"`
}

// DefaultConfig is the production default.
func DefaultConfig() Config { return Config{CPUOvercommit: 4, MemoryOvercommit: 1} }

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.CPUOvercommit <= 0 {
		c.CPUOvercommit = d.CPUOvercommit
	}
	if c.MemoryOvercommit <= 0 {
		c.MemoryOvercommit = d.MemoryOvercommit
	}
	return c
}

// Error codes of placement refusals.
const (
	// CodeNoSchedulableNode: no node can host the VM now; the message says why.
	CodeNoSchedulableNode = "no_schedulable_node"
	// CodeNodeNotSchedulable: the node the VM's spec names cannot host it.
	CodeNodeNotSchedulable = "node_not_schedulable"
)

// Placer places VMs on nodes, reading the store at every call.
//
// Two placements running at once (two jobs, or two replicas) can both see
// the same free capacity and both choose a node that only fits one of the
// VMs: nothing reserves capacity between the read and the VM actor's commit
// of Status.Node. Closing that gap needs the placement and the VM rows it
// counted in one compare-and-set transaction (or a per-node reservation key);
// until then a node can be overcommitted by concurrent placements.
type Placer struct {
	st  *store.Store
	cfg Config
}

// New returns a placer over st.
func New(st *store.Store, cfg Config) *Placer {
	return &Placer{st: st, cfg: cfg.withDefaults()}
}

// Place chooses a node for vm: the named node of spec.node if it can host the
// VM, otherwise among the ready, uncordoned nodes of the VM's architecture
// with an endpoint and room for it, the one with the largest fraction of its
// memory free (ties by name). Refusals are *messages.Error with
// CodeNoSchedulableNode or CodeNodeNotSchedulable.
func (p *Placer) Place(ctx context.Context, vm *messages.VM) (string, error) {
	nodes, err := listAll(ctx, func(pg store.Page) ([]*messages.Node, string, error) { return p.st.ListNodes(ctx, pg) })
	if err != nil {
		return "", err
	}
	// Scanning every VM is fine at today's scale; a VMs-by-node index
	// replaces it when clusters grow.
	vms, err := listAll(ctx, func(pg store.Page) ([]*messages.VM, string, error) { return p.st.ListVMs(ctx, "", pg) })
	if err != nil {
		return "", err
	}
	return Choose(p.cfg.withDefaults(), vm, nodes, vms)
}

func listAll[T any](ctx context.Context, list func(store.Page) ([]*T, string, error)) ([]*T, error) {
	var all []*T
	page := store.Page{Limit: 500}
	for {
		items, next, err := list(page)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" || ctx.Err() != nil {
			return all, ctx.Err()
		}
		page.Cursor = next
	}
}

// usage is what the VMs placed on one node ask of it.
type usage struct {
	cpus      int
	memoryMiB int64
}

// Choose is Place over given nodes and VMs (the VM being placed is not
// counted, even if it is in vms).
func Choose(cfg Config, vm *messages.VM, nodes []*messages.Node, vms []*messages.VM) (string, error) {
	cfg = cfg.withDefaults()
	used := map[string]usage{}
	for _, v := range vms {
		if v.ID == vm.ID || v.Status.Node == "" {
			continue
		}
		u := used[v.Status.Node]
		u.cpus += v.Spec.CPUs
		u.memoryMiB += int64(v.Spec.MemoryMiB)
		used[v.Status.Node] = u
	}
	arch := vm.Spec.Arch
	if arch == "" {
		arch = messages.ArchAMD64
	}
	wantCPU, wantMem := vm.Spec.CPUs, int64(vm.Spec.MemoryMiB)

	if name := vm.Spec.Node; name != "" {
		for _, n := range nodes {
			if n.Name != name {
				continue
			}
			if why := unfit(cfg, n, arch, wantCPU, wantMem, used[n.Name]); why != "" {
				return "", notSchedulable(name, why)
			}
			return name, nil
		}
		return "", notSchedulable(name, "no such node is enrolled")
	}

	type candidate struct {
		name     string
		freeFrac float64
	}
	var cands []candidate
	ready, ofArch := 0, 0
	for _, n := range nodes {
		if n.Phase != messages.NodeReady || n.Cordoned || n.Endpoint == "" || n.Status.Capacity == nil {
			continue
		}
		ready++
		if n.Arch != arch {
			continue
		}
		ofArch++
		if unfit(cfg, n, arch, wantCPU, wantMem, used[n.Name]) != "" {
			continue
		}
		memCap := offered(n.Status.Capacity.MemoryMiB, cfg.MemoryOvercommit)
		free := float64(memCap-used[n.Name].memoryMiB-wantMem) / float64(max(memCap, 1))
		cands = append(cands, candidate{name: n.Name, freeFrac: free})
	}
	switch {
	case ready == 0:
		return "", noNode("no node is ready and schedulable (uncordoned, with an agent endpoint)")
	case ofArch == 0:
		return "", noNode(fmt.Sprintf("no ready node is of architecture %s", arch))
	case len(cands) == 0:
		return "", noNode(fmt.Sprintf("no ready %s node has %d CPUs and %d MiB free", arch, wantCPU, wantMem))
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].freeFrac != cands[j].freeFrac {
			return cands[i].freeFrac > cands[j].freeFrac
		}
		return cands[i].name < cands[j].name
	})
	return cands[0].name, nil
}

// unfit says why n cannot host a VM of arch asking cpus and mem, or "".
func unfit(cfg Config, n *messages.Node, arch string, cpus int, mem int64, u usage) string {
	switch {
	case n.Phase != messages.NodeReady:
		return "it is " + n.Phase
	case n.Cordoned:
		return "it is cordoned"
	case n.Endpoint == "" || n.Status.Capacity == nil:
		return "its agent has not reported an endpoint and capacity"
	case n.Arch != arch:
		return fmt.Sprintf("it is %s, the vm is %s", n.Arch, arch)
	}
	c := n.Status.Capacity
	freeCPU := offered(int64(c.CPUs), cfg.CPUOvercommit) - int64(u.cpus)
	freeMem := offered(c.MemoryMiB, cfg.MemoryOvercommit) - u.memoryMiB
	if int64(cpus) > freeCPU || mem > freeMem {
		return fmt.Sprintf("it has %d CPUs and %d MiB free, the vm needs %d and %d", max(freeCPU, 0), max(freeMem, 0), cpus, mem)
	}
	return ""
}

func offered(capacity int64, ratio float64) int64 {
	return int64(math.Floor(float64(capacity) * ratio))
}

func noNode(why string) *messages.Error {
	return messages.Errorf(messages.KindConflict, CodeNoSchedulableNode, "no node can host this vm: %s", why)
}

func notSchedulable(node, why string) *messages.Error {
	return messages.Errorf(messages.KindConflict, CodeNodeNotSchedulable,
		"node %s named by spec.node cannot host this vm: %s", node, why).WithDetail("node", node)
}
