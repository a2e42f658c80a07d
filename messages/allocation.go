package messages

import "sort"

// NodeAllocation is what the VMs placed on one node ask of it: the sum of
// their sizes and the ids counted. It is kept in the store beside the node
// (one document per node name) and moved in the same transaction as every
// VM row change that places a VM on the node, resizes a placed VM or
// removes one, so at every revision it equals the sum over the VM rows
// whose status names the node. Placement reads it instead of the VMs, and
// guards its reservation by its revision.
type NodeAllocation struct {
	Node      string `json:"node"`
	CPUs      int64  `json:"cpus"`
	MemoryMiB int64  `json:"memory_mib"`
	DiskGiB   int64  `json:"disk_gib"`
	// VMs are the ids counted, sorted.
	VMs []string `json:"vms"`
	// Revision is the document's mod revision when read; 0 when there is
	// no document (no VM is counted on the node).
	Revision int64 `json:"-"`
}

// EntityID implements the store's entity contract: the node's name.
func (a *NodeAllocation) EntityID() string { return a.Node }

// EntityRevision implements the store's entity contract.
func (a *NodeAllocation) EntityRevision() int64 { return a.Revision }

// SetEntityRevision implements the store's entity contract.
func (a *NodeAllocation) SetEntityRevision(r int64) { a.Revision = r }

// Has reports whether the VM id is counted.
func (a *NodeAllocation) Has(id string) bool {
	i := sort.SearchStrings(a.VMs, id)
	return i < len(a.VMs) && a.VMs[i] == id
}

// Add counts a VM of the given spec; it reports false (and changes
// nothing) when the id is counted already.
func (a *NodeAllocation) Add(id string, s VMSpec) bool {
	i := sort.SearchStrings(a.VMs, id)
	if i < len(a.VMs) && a.VMs[i] == id {
		return false
	}
	a.VMs = append(a.VMs, "")
	copy(a.VMs[i+1:], a.VMs[i:])
	a.VMs[i] = id
	a.CPUs += int64(s.CPUs)
	a.MemoryMiB += int64(s.MemoryMiB)
	a.DiskGiB += int64(s.DiskGiB)
	return true
}

// Remove uncounts a VM of the given spec (the spec it was counted with);
// it reports false (and changes nothing) when the id is not counted.
func (a *NodeAllocation) Remove(id string, s VMSpec) bool {
	i := sort.SearchStrings(a.VMs, id)
	if i == len(a.VMs) || a.VMs[i] != id {
		return false
	}
	a.VMs = append(a.VMs[:i], a.VMs[i+1:]...)
	a.CPUs -= int64(s.CPUs)
	a.MemoryMiB -= int64(s.MemoryMiB)
	a.DiskGiB -= int64(s.DiskGiB)
	return true
}

// Equal reports whether two documents count the same VMs and sums
// (revisions aside).
func (a *NodeAllocation) Equal(b *NodeAllocation) bool {
	if a.Node != b.Node || a.CPUs != b.CPUs || a.MemoryMiB != b.MemoryMiB || a.DiskGiB != b.DiskGiB || len(a.VMs) != len(b.VMs) {
		return false
	}
	for i := range a.VMs {
		if a.VMs[i] != b.VMs[i] {
			return false
		}
	}
	return true
}

// Clone is a deep copy.
func (a *NodeAllocation) Clone() *NodeAllocation {
	c := *a
	c.VMs = append([]string(nil), a.VMs...)
	return &c
}

// CodeInsufficientCapacity refuses a placement or a resize that would take a
// node past its capacity × overcommit (HTTP 409; as a task error, the reason
// a create or start gave up). details.resource names what is short, by the
// VM spec's field: cpus, memory_mib or disk_gib (a comma list when the
// nodes judged were short of different ones); details.node names the node
// when one was judged alone.
const CodeInsufficientCapacity = "insufficient_capacity"
