package messages

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Pool drivers.
const (
	// PoolDriverDir keeps volumes as files in a directory of any filesystem.
	PoolDriverDir = "dir"
	// PoolDriverBtrfs keeps each volume in a btrfs subvolume; the pool's
	// path must be on btrfs.
	PoolDriverBtrfs = "btrfs"
)

// Pool health as a node reports it.
const (
	PoolHealthOK    = "ok"
	PoolHealthError = "error"
	// PoolHealthUnknown is the control plane's word for a node of the
	// pool that has not reported it (agents never send it).
	PoolHealthUnknown = "unknown"
)

// Volume phases.
const (
	// VolumePending: committed in etcd, not yet realised on a node.
	VolumePending  = "pending"
	VolumeReady    = "ready"
	VolumeAttached = "attached"
	VolumeMissing  = "missing"
	VolumeDeleting = "deleting"
	VolumeFailed   = "failed"
)

// Bounds of storage requests.
const (
	// SectorSize is what a volume's size is a multiple of: a virtio-blk
	// disk counts 512-byte sectors.
	SectorSize      = 512
	maxPoolPathLen  = 1024
	maxPoolNodes    = 256
	maxVolumeSizeGB = 1 << 20 // 1 PiB in GiB: far above any disk, far below int64
)

// VolumeConditionRealised is the condition that says whether the volume
// exists on disk. Until agents realise volumes it stays False with reason
// NotImplemented: the volume is recorded, sized and placed, nothing more.
const VolumeConditionRealised = "Realised"

// StoragePool is a named place volumes and images live: a directory (dir)
// or a btrfs filesystem (btrfs) at the same path on each of its nodes.
// Pools are cluster infrastructure: admins create and delete them, every
// user reads them. Only the node set changes once a pool exists.
type StoragePool struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Spec      PoolSpec        `json:"spec"`
	Status    PoolClusterView `json:"status"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	// Revision is the etcd mod revision the row was read at (never stored).
	Revision int64 `json:"revision"`
}

// PoolSpec is what an admin asks of a pool.
type PoolSpec struct {
	Driver string `json:"driver"`
	// Path is absolute and clean. Empty only on the seeded default pool,
	// where it means each node's own --pool-dir.
	Path string `json:"path"`
	// Shared says the same path is one filesystem mounted on every node
	// of the pool (NFS, CephFS): its volumes are not tied to a node.
	Shared bool `json:"shared"`
	// Nodes names the nodes that have the pool, unless AllNodes.
	Nodes    []string `json:"nodes,omitempty"`
	AllNodes bool     `json:"all_nodes"`
}

// PoolClusterView is the pool's observed state: what each node last
// reported of it. It is not stored in the pool's row: the API builds it
// from the nodes' reports and the volumes on each node.
type PoolClusterView struct {
	Nodes []PoolNodeStatus `json:"nodes,omitempty"`
}

// PoolNodeStatus is one node's view of a pool. Allocated is the sum of
// the size_bytes of the pool's volumes on that node (on a shared pool,
// of all its volumes), computed by the control plane.
type PoolNodeStatus struct {
	Node string `json:"node"`
	// Path is where the node has the pool: spec.path, or for the default
	// pool the node's --pool-dir. Empty until the node reports the pool.
	Path           string     `json:"path,omitempty"`
	TotalBytes     int64      `json:"total_bytes"`
	UsedBytes      int64      `json:"used_bytes"`
	FreeBytes      int64      `json:"free_bytes"`
	AllocatedBytes int64      `json:"allocated_bytes"`
	Health         string     `json:"health"`
	Message        string     `json:"message,omitempty"`
	ObservedAt     *time.Time `json:"observed_at,omitempty"`
}

// EntityID implements the store's entity contract.
func (p *StoragePool) EntityID() string { return p.ID }

// EntityRevision implements the store's entity contract.
func (p *StoragePool) EntityRevision() int64 { return p.Revision }

// SetEntityRevision implements the store's entity contract.
func (p *StoragePool) SetEntityRevision(r int64) { p.Revision = r }

// HasNode reports whether the pool is assigned to node.
func (p *StoragePool) HasNode(node string) bool {
	return p.Spec.AllNodes || slices.Contains(p.Spec.Nodes, node)
}

// CreatePoolRequest is the body of POST /v1/pools.
type CreatePoolRequest struct {
	Name string   `json:"name"`
	Spec PoolSpec `json:"spec"`
}

// PoolPatch is the body of PATCH /v1/pools/{name}: only the node set may
// change. The driver and the path are the data's home: changing them would
// orphan every volume in the pool.
type PoolPatch struct {
	Nodes    *[]string `json:"nodes,omitempty"`
	AllNodes *bool     `json:"all_nodes,omitempty"`
	// Revision, when not 0, is the pool revision the patch is based on
	// (If-Match).
	Revision int64 `json:"-"`
}

// Apply sets the patch on spec and reports whether anything changed.
func (p PoolPatch) Apply(spec *PoolSpec) bool {
	next := *spec
	if p.Nodes != nil {
		next.Nodes = slices.Clone(*p.Nodes)
	}
	if p.AllNodes != nil {
		next.AllNodes = *p.AllNodes
		if next.AllNodes && p.Nodes == nil {
			next.Nodes = nil
		}
	}
	if next.AllNodes == spec.AllNodes && slices.Equal(next.Nodes, spec.Nodes) {
		return false
	}
	*spec = next
	return true
}

// Storage error codes clients branch on.
var (
	// ErrPoolInUse refuses deleting a pool volumes are in.
	ErrPoolInUse = &Error{Kind: KindConflict, Code: "pool_in_use", Message: "volumes are in the pool; delete them first"}
	// ErrPoolNodeInUse refuses removing a node from a pool while volumes
	// of the pool are on that node.
	ErrPoolNodeInUse = &Error{Kind: KindConflict, Code: "pool_node_in_use", Message: "volumes of the pool are on the node"}
	// ErrVolumeShrink refuses a resize below the current size.
	ErrVolumeShrink = &Error{Kind: KindConflict, Code: "volume_shrink_unsupported", Message: "volumes only grow"}
	// ErrInsufficientStorage refuses a size above the pool's free space.
	ErrInsufficientStorage = &Error{Kind: KindConflict, Code: "insufficient_storage", Message: "not enough free space in the pool"}
	// ErrPoolNotReady refuses a volume when no node of the pool has
	// reported the pool healthy, so nothing is known of its space.
	ErrPoolNotReady = &Error{Kind: KindConflict, Code: "pool_not_ready", Message: "no node has reported the pool ready"}
	// ErrVolumeAttached refuses deleting a volume attached to a VM.
	ErrVolumeAttached = &Error{Kind: KindConflict, Code: "volume_attached", Message: "the volume is attached to a vm; detach it first"}
)

// ValidatePoolPath checks a pool path: absolute, already clean (no "..",
// no "//", no trailing "/"), not the root, printable and of bounded
// length. A path that is not clean is refused rather than cleaned, so
// what the admin typed is exactly what every agent uses.
func ValidatePoolPath(field, path string) error {
	switch {
	case path == "":
		return Invalid(field, "is required")
	case len(path) > maxPoolPathLen:
		return Invalid(field, "must be at most %d bytes", maxPoolPathLen)
	case !filepath.IsAbs(path):
		return Invalid(field, "%q must be an absolute path", path)
	case filepath.Clean(path) != path:
		return Invalid(field, "%q is not clean; use %q", path, filepath.Clean(path))
	case path == "/":
		return Invalid(field, "must not be the root directory")
	}
	for _, r := range path {
		if r < 0x20 || r == 0x7f {
			return Invalid(field, "must not contain control characters")
		}
	}
	for _, sys := range []string{"/proc", "/sys", "/dev", "/run", "/boot", "/etc"} {
		if path == sys || strings.HasPrefix(path, sys+"/") {
			return Invalid(field, "%q is under %s, a system directory", path, sys)
		}
	}
	return nil
}

// ValidatePoolSpec checks a pool's spec as a create asks for it.
func ValidatePoolSpec(spec *PoolSpec) error {
	switch spec.Driver {
	case PoolDriverDir, PoolDriverBtrfs:
	case "":
		return Invalid("spec.driver", "is required (%s or %s)", PoolDriverDir, PoolDriverBtrfs)
	default:
		return Invalid("spec.driver", "must be %q or %q", PoolDriverDir, PoolDriverBtrfs)
	}
	if err := ValidatePoolPath("spec.path", spec.Path); err != nil {
		return err
	}
	return ValidatePoolNodes(spec)
}

// ValidatePoolNodes checks the node set: all_nodes or a list of distinct
// node names, not both, not neither. The list is sorted so equal sets
// compare equal.
func ValidatePoolNodes(spec *PoolSpec) error {
	if spec.AllNodes && len(spec.Nodes) > 0 {
		return Invalid("spec.nodes", "give nodes or all_nodes, not both")
	}
	if !spec.AllNodes && len(spec.Nodes) == 0 {
		return Invalid("spec.nodes", "give the nodes that have the pool, or all_nodes")
	}
	if len(spec.Nodes) > maxPoolNodes {
		return Invalid("spec.nodes", "at most %d nodes; use all_nodes", maxPoolNodes)
	}
	for i, n := range spec.Nodes {
		if err := ValidateName(fmt.Sprintf("spec.nodes[%d]", i), n); err != nil {
			return err
		}
	}
	spec.Nodes = slices.Clone(spec.Nodes)
	slices.Sort(spec.Nodes)
	if d := slices.Compact(slices.Clone(spec.Nodes)); len(d) != len(spec.Nodes) {
		return Invalid("spec.nodes", "names a node twice")
	}
	return nil
}

// BuildPool validates a create request and returns the pool it describes,
// without id or times.
func BuildPool(req CreatePoolRequest) (*StoragePool, error) {
	if err := ValidateName("name", req.Name); err != nil {
		return nil, err
	}
	spec := req.Spec
	if err := ValidatePoolSpec(&spec); err != nil {
		return nil, err
	}
	return &StoragePool{Name: req.Name, Spec: spec}, nil
}

// Volume is a block device of a given size in a pool, owned by a user
// like a VM is.
type Volume struct {
	ID         string       `json:"id"`
	Name       string       `json:"name"`
	Owner      string       `json:"owner"`
	Generation int64        `json:"generation"`
	Spec       VolumeSpec   `json:"spec"`
	Status     VolumeStatus `json:"status"`
	CreatedAt  time.Time    `json:"created_at"`
	UpdatedAt  time.Time    `json:"updated_at"`
	Revision   int64        `json:"revision"`
}

// VolumeSpec is what the owner asks for.
type VolumeSpec struct {
	// Pool is the pool's name; empty in a request means the settings'
	// default_pool.
	Pool string `json:"pool"`
	// Node, when set, pins the volume to that node of the pool.
	Node      string `json:"node,omitempty"`
	SizeBytes int64  `json:"size_bytes"`
}

// VolumeStatus is where the volume is and what it is doing.
type VolumeStatus struct {
	Phase string `json:"phase"`
	// PoolID is the id of the pool named by spec.pool, fixed at creation.
	PoolID string `json:"pool_id"`
	// Node is where the volume lives on a node-local pool (chosen at
	// creation); empty on a shared pool without a pinned node.
	Node string `json:"node,omitempty"`
	// OwnerNode is, on a shared pool, the one node allowed to open the
	// volume (a lease-like field); empty while no node holds it.
	OwnerNode  string      `json:"owner_node,omitempty"`
	AttachedTo string      `json:"attached_to,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
	Message    string      `json:"message,omitempty"`
}

// EntityID implements the store's entity contract.
func (v *Volume) EntityID() string { return v.ID }

// EntityRevision implements the store's entity contract.
func (v *Volume) EntityRevision() int64 { return v.Revision }

// SetEntityRevision implements the store's entity contract.
func (v *Volume) SetEntityRevision(r int64) { v.Revision = r }

// CreateVolumeRequest is the body of POST /v1/volumes.
type CreateVolumeRequest struct {
	Name string     `json:"name"`
	Spec VolumeSpec `json:"spec"`
}

// ResizeVolumeRequest is the body of POST /v1/volumes/{id}/resize.
type ResizeVolumeRequest struct {
	SizeBytes int64 `json:"size_bytes"`
}

// ValidateVolumeSize checks a volume size: positive, a whole number of
// 512-byte sectors (what a virtio-blk disk is counted in), at most 1 PiB.
func ValidateVolumeSize(field string, size int64) error {
	switch {
	case size == 0:
		return Invalid(field, "is required and must be above 0")
	case size < 0:
		return Invalid(field, "must be positive, not %d", size)
	case size%SectorSize != 0:
		return Invalid(field, "%d is not a multiple of %d bytes", size, SectorSize)
	case size > maxVolumeSizeGB<<30:
		return Invalid(field, "must be at most 1 PiB")
	}
	return nil
}

// ValidateVolumeRequest checks a create request's own fields; the pool,
// the node and the space are the control plane's checks.
func ValidateVolumeRequest(req *CreateVolumeRequest) error {
	if err := ValidateName("name", req.Name); err != nil {
		return err
	}
	if req.Spec.Pool != "" {
		if err := ValidateName("spec.pool", req.Spec.Pool); err != nil {
			return err
		}
	}
	if req.Spec.Node != "" {
		if err := ValidateName("spec.node", req.Spec.Node); err != nil {
			return err
		}
	}
	return ValidateVolumeSize("spec.size_bytes", req.Spec.SizeBytes)
}

// CheckVolumeGrow checks a resize: a valid size, never below the current.
// The same size is accepted (and changes nothing).
func CheckVolumeGrow(v *Volume, size int64) error {
	if err := ValidateVolumeSize("size_bytes", size); err != nil {
		return err
	}
	if size < v.Spec.SizeBytes {
		e := ErrVolumeShrink.WithDetail("size_bytes", v.Spec.SizeBytes).WithDetail("requested", size)
		e.Message = fmt.Sprintf("volume %s is %d bytes; it can grow but not shrink to %d", v.Name, v.Spec.SizeBytes, size)
		return e
	}
	return nil
}

// InsufficientStorage is insufficient_storage naming the pool, the node
// (empty on a shared pool) and the numbers.
func InsufficientStorage(pool, node string, requested, free int64) *Error {
	where := "pool " + pool
	if node != "" {
		where += " on node " + node
	}
	e := ErrInsufficientStorage.WithDetail("pool", pool).WithDetail("requested_bytes", requested).
		WithDetail("free_bytes", free)
	if node != "" {
		e = e.WithDetail("node", node)
	}
	e.Message = fmt.Sprintf("%s has %d bytes free; %d bytes were asked for", where, free, requested)
	return e
}

// NotRealisedCondition is the Realised condition a volume carries until
// agents create volumes on disk (they do not yet).
func NotRealisedCondition(now time.Time) Condition {
	return Condition{Type: VolumeConditionRealised, Status: "False", Reason: "NotImplemented",
		Message:            "recorded in the control plane only: agents do not create volume files yet",
		LastTransitionTime: now.UTC()}
}

// DesiredPool is one pool the control plane wants a node to have, sent
// down in each heartbeat answer.
type DesiredPool struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Driver string `json:"driver"`
	// Path is empty for the default pool: the node's own --pool-dir.
	Path   string `json:"path"`
	Shared bool   `json:"shared"`
}

// ValidateDesiredPool checks a desired pool as an agent receives it:
// the agent builds paths from it, so it trusts nothing.
func ValidateDesiredPool(p DesiredPool) error {
	if err := ValidateName("pool.name", p.Name); err != nil {
		return err
	}
	if !ValidID(p.ID) {
		return Invalid("pool.id", "%q is not an id", p.ID)
	}
	switch p.Driver {
	case PoolDriverDir, PoolDriverBtrfs:
	default:
		return Invalid("pool.driver", "must be %q or %q", PoolDriverDir, PoolDriverBtrfs)
	}
	if p.Path == "" {
		return nil
	}
	return ValidatePoolPath("pool.path", p.Path)
}

// ValidatePoolReports checks the pools a heartbeat reports: names valid,
// figures not negative, health known, a bounded count.
func ValidatePoolReports(pools []PoolStatus) error {
	if len(pools) > maxPoolNodes {
		return Invalid("pools", "at most %d pools", maxPoolNodes)
	}
	for i, p := range pools {
		f := fmt.Sprintf("pools[%d]", i)
		if err := ValidateName(f+".name", p.Name); err != nil {
			return err
		}
		if p.TotalBytes < 0 || p.FreeBytes < 0 || p.UsedBytes < 0 {
			return Invalid(f, "sizes must not be negative")
		}
		switch p.Health {
		case "", PoolHealthOK, PoolHealthError:
		default:
			return Invalid(f+".health", "must be %q or %q", PoolHealthOK, PoolHealthError)
		}
		if len(p.Message) > 1024 {
			return Invalid(f+".message", "must be at most 1024 bytes")
		}
		if len(p.Path) > 4096 {
			return Invalid(f+".path", "must be at most 4096 bytes")
		}
	}
	return nil
}
