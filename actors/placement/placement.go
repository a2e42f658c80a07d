// Package placement chooses the node a VM runs on, from the nodes and VMs in
// the store.
package placement

import (
	"context"
	"fmt"
	"math"
	"sort"
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
// Two placements running at once (two jobs, or two replicas) can both see
// the same free capacity and both choose a node that only fits one of the
// VMs: nothing reserves capacity between the read and the VM actor's commit
// of Status.Node. Closing that gap needs the placement and the VM rows it
// counted in one compare-and-set transaction (or a per-node reservation key);
// until then a node can be overcommitted by concurrent placements.
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
	diskGiB   int64
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
		u.diskGiB += int64(v.Spec.DiskGiB)
		used[v.Status.Node] = u
	}
	w := wantOf(vm)
	arch := w.arch

	if name := vm.Spec.Node; name != "" {
		for _, n := range nodes {
			if n.Name != name {
				continue
			}
			if why := unfit(cfg, n, w, used[n.Name]); why != "" {
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
		if unfit(cfg, n, w, used[n.Name]) != "" {
			continue
		}
		memCap := offered(n.Status.Capacity.MemoryMiB, cfg.MemoryOvercommit)
		free := float64(memCap-used[n.Name].memoryMiB-w.mem) / float64(max(memCap, 1))
		cands = append(cands, candidate{name: n.Name, freeFrac: free})
	}
	switch {
	case ready == 0:
		return "", noNode("no node is ready and schedulable (uncordoned, with an agent endpoint)")
	case ofArch == 0:
		return "", noNode(fmt.Sprintf("no ready node is of architecture %s", arch))
	case len(cands) == 0:
		return "", noNode(fmt.Sprintf("no ready %s node has %d CPUs, %d MiB and %d GiB of disk free", arch, w.cpus, w.mem, w.diskGiB))
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].freeFrac != cands[j].freeFrac {
			return cands[i].freeFrac > cands[j].freeFrac
		}
		return cands[i].name < cands[j].name
	})
	return cands[0].name, nil
}

// unfit says why n cannot host a VM asking w, with u already placed on
// it, or "".
func unfit(cfg Config, n *messages.Node, w want, u usage) string {
	arch, cpus, mem := w.arch, w.cpus, w.mem
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
	// Disk counts twice: the pool's size promised to the disks placed here
	// (each may grow to its full size) and the pool's free space now (the
	// image cache and anything else share it), both times the ratio.
	total, free, ok := poolSpace(n)
	if !ok {
		return "its agent reports no space for storage pool " + PoolName
	}
	promised := offered(total/gib, cfg.DiskOvercommit) - u.diskGiB
	if w.diskGiB > promised {
		return fmt.Sprintf("its pool has %d GiB of disk left to promise, the vm needs %d", max(promised, 0), w.diskGiB)
	}
	if now := offered(free/gib, cfg.DiskOvercommit); w.diskGiB > now {
		return fmt.Sprintf("its pool has %d GiB free, the vm needs %d", max(now, 0), w.diskGiB)
	}
	return ""
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
