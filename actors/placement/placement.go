// Package placement chooses the node a VM runs on, from the nodes and VMs in
// the store.
package placement

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

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
	// DiskOvercommit is how many GiB of VM disk a node's default pool
	// offers per GiB it has (default 1: not overcommitted). Disks are thin
	// qcow2 overlays, so a ratio above 1 is possible, but when the pool
	// fills QEMU pauses every VM on the node, and a tenant fills their
	// disk at will: overcommit lets one user stop everyone's VMs, so it is
	// the operator's explicit choice, never the default.
	DiskOvercommit float64 `koanf:"disk_overcommit"`
}

// DefaultConfig is the production default.
func DefaultConfig() Config { return Config{CPUOvercommit: 4, MemoryOvercommit: 1, DiskOvercommit: 1} }

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.CPUOvercommit <= 0 {
		c.CPUOvercommit = d.CPUOvercommit
	}
	if c.MemoryOvercommit <= 0 {
		c.MemoryOvercommit = d.MemoryOvercommit
	}
	if c.DiskOvercommit <= 0 {
		c.DiskOvercommit = d.DiskOvercommit
	}
	return c
}

// Error codes of placement refusals.
const (
	// CodeNoSchedulableNode: no node can host the VM now; the message says why.
	CodeNoSchedulableNode = "no_schedulable_node"
	// CodeNodeNotSchedulable: the node the VM's spec names cannot host it.
	CodeNodeNotSchedulable = "node_not_schedulable"
	// CodeUnschedulable refuses a create at once (HTTP 422): no node the
	// cluster has could host the VM even empty. details.resource names
	// what is short: cpus, memory_mib, disk_gib or arch.
	CodeUnschedulable = "unschedulable"
)

// PoolName is the storage pool VM disks are created in and counted against.
const PoolName = "default"

const gib = 1 << 30

// Placer places VMs on nodes, reading the store at every call.
//
// A placement reads the node rows and the allocation documents of the
// candidate nodes (persistence/store/allocations.go), never the VM rows, so
// its cost does not grow with the number of VMs. The choice is only a
// proposal: the VM actor commits it with the node's allocation document,
// guarded by the document's revision and judged again by Admit, so two
// placements that saw the same free capacity (two jobs, or two replicas)
// cannot both take it.
type Placer struct {
	st  *store.Store
	cfg Config

	// mu guards the node list Schedulable admits creates on (admit.go).
	mu      sync.Mutex
	nodes   []*messages.Node
	nodesAt time.Time
}

// New returns a placer over st.
func New(st *store.Store, cfg Config) *Placer {
	return &Placer{st: st, cfg: cfg.withDefaults()}
}

// Place chooses a node for vm: the named node of spec.node if it can host the
// VM, otherwise among the ready, uncordoned nodes of the VM's architecture
// with an endpoint and room for it, the one with the largest fraction of its
// memory free (ties by name). Refusals are *messages.Error with
// CodeNoSchedulableNode, CodeNodeNotSchedulable or
// messages.CodeInsufficientCapacity.
func (p *Placer) Place(ctx context.Context, vm *messages.VM) (string, error) {
	nodes, err := listAll(ctx, func(pg store.Page) ([]*messages.Node, string, error) { return p.st.ListNodes(ctx, pg) })
	if err != nil {
		return "", err
	}
	cands := candidates(p.cfg, vm, nodes)
	allocs, err := p.st.Allocations(ctx, cands)
	if err != nil {
		return "", err
	}
	return Choose(p.cfg, vm, nodes, allocs)
}

// candidates are the names of the nodes whose allocation documents decide
// vm's placement: the one spec.node names, or the schedulable nodes of its
// architecture that could host it empty.
func candidates(cfg Config, vm *messages.VM, nodes []*messages.Node) []string {
	w := wantOf(vm)
	var names []string
	for _, n := range nodes {
		if name := vm.Spec.Node; name != "" {
			if n.Name == name {
				return []string{name}
			}
			continue
		}
		if why, _ := unfit(cfg, n, w, nil); why == "" {
			names = append(names, n.Name)
		}
	}
	return names
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

// want is what the VM being placed asks of a node.
type want struct {
	arch    string
	cpus    int
	mem     int64
	diskGiB int64
}

func wantOf(vm *messages.VM) want {
	w := want{arch: vm.Spec.Arch, cpus: vm.Spec.CPUs, mem: int64(vm.Spec.MemoryMiB), diskGiB: int64(vm.Spec.DiskGiB)}
	if w.arch == "" {
		w.arch = messages.ArchAMD64
	}
	return w
}

// Resource names in insufficient_capacity's and unschedulable's details:
// the VM spec's field names.
const (
	ResourceCPUs   = "cpus"
	ResourceMemory = "memory_mib"
	ResourceDisk   = "disk_gib"
)

// Choose is Place over given nodes and allocation documents by node name (a
// node missing from allocs has nothing placed on it; the VM being placed is
// not counted, even if a document counts it).
func Choose(cfg Config, vm *messages.VM, nodes []*messages.Node, allocs map[string]*messages.NodeAllocation) (string, error) {
	cfg = cfg.withDefaults()
	used := func(node string) *messages.NodeAllocation {
		a := allocs[node]
		if a == nil {
			return &messages.NodeAllocation{Node: node}
		}
		if a.Has(vm.ID) {
			a = a.Clone()
			a.Remove(vm.ID, vm.Spec)
		}
		return a
	}
	w := wantOf(vm)
	arch := w.arch

	if name := vm.Spec.Node; name != "" {
		for _, n := range nodes {
			if n.Name != name {
				continue
			}
			if why, resource := unfit(cfg, n, w, used(n.Name)); why != "" {
				if resource != "" {
					return "", insufficient(fmt.Sprintf("node %s named by spec.node cannot host this vm: %s", name, why), resource).
						WithDetail("node", name)
				}
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
	short := map[string]bool{}
	for _, n := range nodes {
		if n.Phase != messages.NodeReady || n.Cordoned || n.Endpoint == "" || n.Status.Capacity == nil {
			continue
		}
		ready++
		if n.Arch != arch {
			continue
		}
		ofArch++
		u := used(n.Name)
		if why, resource := unfit(cfg, n, w, u); why != "" {
			short[resource] = true
			continue
		}
		memCap := offered(n.Status.Capacity.MemoryMiB, cfg.MemoryOvercommit)
		free := float64(memCap-u.MemoryMiB-w.mem) / float64(max(memCap, 1))
		cands = append(cands, candidate{name: n.Name, freeFrac: free})
	}
	switch {
	case ready == 0:
		return "", noNode("no node is ready and schedulable (uncordoned, with an agent endpoint)")
	case ofArch == 0:
		return "", noNode(fmt.Sprintf("no ready node is of architecture %s", arch))
	case len(cands) == 0:
		var resources []string
		for _, r := range []string{ResourceCPUs, ResourceMemory, ResourceDisk} {
			if short[r] {
				resources = append(resources, r)
			}
		}
		return "", insufficient(fmt.Sprintf("no node can host this vm: no ready %s node has %d CPUs, %d MiB and %d GiB of disk free",
			arch, w.cpus, w.mem, w.diskGiB), strings.Join(resources, ","))
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].freeFrac != cands[j].freeFrac {
			return cands[i].freeFrac > cands[j].freeFrac
		}
		return cands[i].name < cands[j].name
	})
	return cands[0].name, nil
}

// unfit says why n cannot host a VM asking w, with u already placed on it
// (nil: judged empty), or ""; resource names what is short when the reason
// is capacity ("" otherwise).
func unfit(cfg Config, n *messages.Node, w want, u *messages.NodeAllocation) (why, resource string) {
	if u == nil {
		u = &messages.NodeAllocation{}
	}
	arch, cpus, mem := w.arch, w.cpus, w.mem
	switch {
	case n.Phase != messages.NodeReady:
		return "it is " + n.Phase, ""
	case n.Cordoned:
		return "it is cordoned", ""
	case n.Endpoint == "" || n.Status.Capacity == nil:
		return "its agent has not reported an endpoint and capacity", ""
	case n.Arch != arch:
		return fmt.Sprintf("it is %s, the vm is %s", n.Arch, arch), ""
	}
	c := n.Status.Capacity
	freeCPU := offered(int64(c.CPUs), cfg.CPUOvercommit) - u.CPUs
	freeMem := offered(c.MemoryMiB, cfg.MemoryOvercommit) - u.MemoryMiB
	if int64(cpus) > freeCPU || mem > freeMem {
		resource = ResourceMemory
		if int64(cpus) > freeCPU {
			resource = ResourceCPUs
		}
		return fmt.Sprintf("it has %d CPUs and %d MiB free, the vm needs %d and %d", max(freeCPU, 0), max(freeMem, 0), cpus, mem), resource
	}
	// Disk counts twice: the pool's size promised to the disks placed here
	// (each may grow to its full size) and the pool's free space now (the
	// image cache and anything else share it), both times the ratio.
	total, free, ok := poolSpace(n)
	if !ok {
		return "its agent reports no space for storage pool " + PoolName, ""
	}
	promised := offered(total/gib, cfg.DiskOvercommit) - u.DiskGiB
	if w.diskGiB > promised {
		return fmt.Sprintf("its pool has %d GiB of disk left to promise, the vm needs %d", max(promised, 0), w.diskGiB), ResourceDisk
	}
	if now := offered(free/gib, cfg.DiskOvercommit); w.diskGiB > now {
		return fmt.Sprintf("its pool has %d GiB free, the vm needs %d", max(now, 0), w.diskGiB), ResourceDisk
	}
	return "", ""
}

// Admit judges, in the transaction that commits it, a change of a node's
// allocation document from `from` to `to` (a placement, or a resize of a VM
// placed there): each resource that grows must stay within the node's
// capacity × overcommit, else insufficient_capacity names it. It reads the
// node's row; a node not enrolled or that never reported a capacity is not
// judged (a placement has just judged it; a resize of a VM on a node that
// left is not the node's to refuse). It is store.AdmitAllocation.
func (p *Placer) Admit(ctx context.Context, from, to *messages.NodeAllocation) error {
	n, err := p.st.NodeByName(ctx, to.Node)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	if n.Status.Capacity == nil {
		return nil
	}
	return admit(p.cfg, n, from, to)
}

func admit(cfg Config, n *messages.Node, from, to *messages.NodeAllocation) error {
	c := n.Status.Capacity
	total, _, hasPool := poolSpace(n)
	for _, r := range []struct {
		resource string
		from, to int64
		offer    int64
		known    bool
	}{
		{ResourceCPUs, from.CPUs, to.CPUs, offered(int64(c.CPUs), cfg.CPUOvercommit), true},
		{ResourceMemory, from.MemoryMiB, to.MemoryMiB, offered(c.MemoryMiB, cfg.MemoryOvercommit), true},
		{ResourceDisk, from.DiskGiB, to.DiskGiB, offered(total/gib, cfg.DiskOvercommit), hasPool},
	} {
		if !r.known || r.to <= r.from || r.to <= r.offer {
			continue
		}
		return insufficient(fmt.Sprintf("node %s cannot take %d more %s: %d of its %d are allocated",
			n.Name, r.to-r.from, r.resource, r.from, r.offer), r.resource).
			WithDetail("node", n.Name).WithDetail("requested", r.to-r.from).WithDetail("available", max(r.offer-r.from, 0))
	}
	return nil
}

func insufficient(msg, resource string) *messages.Error {
	return messages.Errorf(messages.KindConflict, messages.CodeInsufficientCapacity, "%s", msg).WithDetail("resource", resource)
}

// poolSpace is the size and free space of a node's VM disk pool, in bytes.
func poolSpace(n *messages.Node) (total, free int64, ok bool) {
	for _, p := range n.Status.Pools {
		if p.Name == PoolName && p.TotalBytes > 0 {
			return p.TotalBytes, max(p.FreeBytes, 0), true
		}
	}
	return 0, 0, false
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
