package messages

import "time"

// HeartbeatMaxBytes is the largest heartbeat body the control plane reads,
// and the budget the agent fits its report into. It is sized for 1,000 VMs
// and 1,000 cached images with room to spare: measured (see
// nodeagent/heartbeat TestHeartbeatSizes) at 186 bytes per VM observation
// (711 with the longest message the agent sends, 512 bytes) and 258 bytes
// per image with a 128-byte name, so 1,000 of each is 0.44 MB typical and
// 0.97 MB at worst; 4 MiB leaves four times that for fields added later
// (an image's source URL). The agent fits its report within this (dropping
// images first), so a node never falls out of the cluster for being big.
// Every other request on the agent listener keeps a 64 KiB limit.
const HeartbeatMaxBytes = 4 << 20

// Heartbeat is what an agent POSTs to /v1/heartbeat on the agent-facing
// listener, over mutual TLS, every interval: its observed state. The receiver
// decodes it strictly (unknown fields are refused): the contract is neither
// forward- nor backward-compatible, so the control plane is upgraded first.
type Heartbeat struct {
	AgentVersion string `json:"agent_version"`
	// Endpoint is the agent's own mTLS API (https://host:port); the control
	// plane calls it to run VM tasks.
	Endpoint     string        `json:"endpoint"`
	Arch         string        `json:"arch"`
	Capacity     NodeCapacity  `json:"capacity"`
	QEMUVersions []string      `json:"qemu_versions"`
	Pools        []PoolStatus  `json:"pools"`
	VMs          []VMObserved  `json:"vms"`
	Images       []CachedImage `json:"images"`
	// Overlay is the node's side of the WireGuard mesh; nil from an agent
	// that runs no data plane.
	Overlay *NodeOverlay `json:"overlay,omitempty"`
	// OverlayRevision is the revision of the desired overlay the agent holds
	// (DesiredOverlay.Revision of the last one it accepted); the control
	// plane leaves out an overlay the agent already has.
	OverlayRevision string `json:"overlay_revision,omitempty"`
	// OmittedVMs and OmittedImages count the VM observations and cached
	// images left out of this report to keep it within HeartbeatMaxBytes
	// (the agent drops images first, then rotates through its VMs). A
	// report with omissions is partial: the control plane counts the
	// omitted ones and must not read their absence as "gone".
	OmittedVMs    int `json:"omitted_vms,omitempty"`
	OmittedImages int `json:"omitted_images,omitempty"`
	// HostPrefixes are the IPv4 prefixes the node's host already uses
	// (addresses, routes, resolvers, gateway, the control plane's
	// address), compacted to MaxHostPrefixes; the control plane refuses an
	// overlay supernet that overlaps any. Nil from an agent with no data
	// plane, which installs nothing.
	HostPrefixes []HostPrefix `json:"host_prefixes,omitempty"`
	// VMMetrics are the latest samples of the node's running VMs (see
	// VMMetrics), busiest first, at most MaxMetricsVMs; OmittedVMMetrics
	// counts those left out by that bound or by the size budget (metrics
	// are the first thing dropped when a report does not fit).
	VMMetrics        []VMMetrics `json:"vm_metrics,omitempty"`
	OmittedVMMetrics int         `json:"omitted_vm_metrics,omitempty"`
}

// NodeOverlay is what the control plane needs to put a node in the mesh:
// its WireGuard public key (the private key never leaves the node), the
// underlay address peers reach it at, and how its last reconcile went.
type NodeOverlay struct {
	PublicKey string `json:"public_key"`
	Endpoint  string `json:"endpoint"`  // underlay ip:port of the WireGuard listener
	WireGuard string `json:"wireguard"` // "kernel" or "userspace"
	// TunnelOffload: userspace WireGuard takes VXLAN from the kernel in
	// UDP-tunnel GSO batches (Linux 6.17+), not one datagram at a time.
	TunnelOffload bool   `json:"tunnel_offload,omitempty"`
	Reconciled    bool   `json:"reconciled"`
	Error         string `json:"error,omitempty"` // the last reconcile's failure
	// Conflicts are the prefixes the last reconcile refused to install
	// because the host already routes them; the node's
	// HostNetworkConflict condition is made from them.
	Conflicts []HostConflict `json:"conflicts,omitempty"`
}

// NodeCapacity is what a node offers.
type NodeCapacity struct {
	CPUs      int   `json:"cpus"`
	MemoryMiB int64 `json:"memory_mib"`
	// KVM says whether /dev/kvm is usable; KVMReason says why not, or how it
	// was judged (a nested host may have /dev/kvm that cannot boot guests).
	KVM       bool   `json:"kvm"`
	KVMReason string `json:"kvm_reason,omitempty"`
	// Accelerator is what the agent will use: "kvm" or "tcg".
	Accelerator string `json:"accelerator"`
}

// PoolStatus is one storage pool as the agent sees it. An agent from
// before pools were resources sends only name, path, total and free for
// its default pool; the rest is empty then (health "" reads as ok when
// the total is known).
type PoolStatus struct {
	Name string `json:"name"`
	// ID is the pool's id from the desired state (empty from an old agent).
	ID         string `json:"id,omitempty"`
	Driver     string `json:"driver,omitempty"`
	Path       string `json:"path"`
	TotalBytes int64  `json:"total_bytes"`
	UsedBytes  int64  `json:"used_bytes,omitempty"`
	FreeBytes  int64  `json:"free_bytes"`
	// Health is ok or error; Message says why not ok.
	Health  string `json:"health,omitempty"`
	Message string `json:"message,omitempty"`
}

// Healthy reports whether the pool is usable on the node.
func (p PoolStatus) Healthy() bool {
	return p.Health == PoolHealthOK || p.Health == "" && p.TotalBytes > 0
}

// VMObserved is one VM as the agent sees it.
type VMObserved struct {
	ID                 string     `json:"id"`
	Phase              string     `json:"phase"`
	ObservedGeneration int64      `json:"observed_generation"`
	Pid                int        `json:"pid,omitempty"`
	StartedAt          *time.Time `json:"started_at,omitempty"`
	Message            string     `json:"message,omitempty"`
	// Reason is set when the guest or QEMU changed the phase on its own
	// (VM condition reasons: GuestShutdown, GuestPanicked, GuestReset,
	// IOError, QEMUExited); empty after an operation the user asked for.
	Reason string `json:"reason,omitempty"`
	// ObservedAt is the agent's clock when this was true; the control plane
	// keeps the newest of a task result and a heartbeat by it.
	ObservedAt time.Time `json:"observed_at"`
}

// CachedImage is one base image in a pool's cache.
type CachedImage struct {
	Pool      string `json:"pool"`
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	SHA256    string `json:"sha256,omitempty"`
}

// HeartbeatResponse carries the desired state down and the interval the agent
// must use for its next heartbeat (plus its own jitter).
type HeartbeatResponse struct {
	IntervalSeconds int          `json:"interval_seconds"`
	Desired         DesiredState `json:"desired"`
	// ReplicaURLs are the agent-facing URLs of the control plane's
	// replicas that serve (voters), at most 16: the agent keeps them and
	// fails over between them. Absent on a control plane of one replica
	// without a peer listener.
	ReplicaURLs []string `json:"replica_urls,omitempty"`
}

// DesiredState is what the control plane wants the node to run. VMs,
// networks and the overlay's forwarding database and peers arrive with the
// issues that build them; today it carries the settings.
type DesiredState struct {
	Settings Settings `json:"settings"`
	// Overlay is the node's data plane; nil until the node has reported
	// its WireGuard key, and nil when the heartbeat named OverlayRevision
	// as the one it holds.
	Overlay *DesiredOverlay `json:"overlay,omitempty"`
	// OverlayRevision is the revision of the node's desired overlay, set
	// whenever the node has one: equal to what the agent holds, it means
	// "unchanged, keep converging to it" (at 500 nodes the overlay is tens
	// of kilobytes, and most beats change nothing).
	OverlayRevision string `json:"overlay_revision,omitempty"`
	// Pools are the storage pools assigned to the node, in name order.
	// The agent realises each (creates or checks its directory) and
	// reports it in the next heartbeat. Nil from a control plane that
	// predates pools; the agent then keeps only its default pool.
	Pools []DesiredPool `json:"pools"`
}

// DesiredOverlay is the data plane the control plane computes for one node
// at each heartbeat: the networks, this node's tunnel address, its WireGuard
// peers, and the VXLAN forwarding database (agents do not learn). The NICs
// come with each VM (AgentVM.NICs), so the agent makes taps for the VMs it
// runs.
type DesiredOverlay struct {
	// Revision identifies the content: equal revisions, equal overlays.
	Revision   string            `json:"revision"`
	TunnelIP   string            `json:"tunnel_ip"` // this node's mesh address, a /32 of the overlay supernet
	ListenPort int               `json:"listen_port"`
	Networks   []DesiredNetwork  `json:"networks"`
	Peers      []DesiredPeer     `json:"peers"`
	FDB        []DesiredFDBEntry `json:"fdb"`
}

// DesiredNetwork is one network as a node builds it.
type DesiredNetwork struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	CIDR       string `json:"cidr"`
	Type       string `json:"type"`
	VNI        int    `json:"vni,omitempty"`
	MTU        int    `json:"mtu"`
	Egress     bool   `json:"egress"`
	GatewayMAC string `json:"gateway_mac"`
}

// DesiredPeer is another node in the mesh.
type DesiredPeer struct {
	Node      string `json:"node"`
	PublicKey string `json:"public_key"`
	Endpoint  string `json:"endpoint"`  // underlay ip:port
	TunnelIP  string `json:"tunnel_ip"` // its mesh address
}

// DesiredFDBEntry sends a VM's MAC on an overlay network to the node that
// runs it.
type DesiredFDBEntry struct {
	Network string `json:"network"` // network id
	MAC     string `json:"mac"`
	Remote  string `json:"remote"` // the tunnel IP of the VM's node
}

// NodeStatus is the node's last observed state as the control plane holds it
// (in the node actor; written to etcd only when it changes).
type NodeStatus struct {
	LastHeartbeatAt *time.Time    `json:"last_heartbeat_at,omitempty"`
	Capacity        *NodeCapacity `json:"capacity,omitempty"`
	QEMUVersions    []string      `json:"qemu_versions,omitempty"`
	Pools           []PoolStatus  `json:"pools,omitempty"`
	VMCount         int           `json:"vm_count"`
	ImageCount      int           `json:"image_count"`
	// Overlay is the node's side of the mesh from its last heartbeat; the
	// row is written when its key, endpoint or implementation change, not
	// for its reconcile outcome, which the actor holds in memory (and
	// repeats in Message while it fails).
	Overlay *NodeOverlay `json:"overlay,omitempty"`
	// HostPrefixes are what the host reported it already routes (see
	// Heartbeat.HostPrefixes), kept to validate settings changes.
	HostPrefixes []HostPrefix `json:"host_prefixes,omitempty"`
	// Conditions are named facts about the node, such as
	// HostNetworkConflict.
	Conditions []Condition `json:"conditions,omitempty"`
	Message    string      `json:"message,omitempty"`
}
