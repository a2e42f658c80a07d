// Package netfabric converges a node's VM network data plane: a Linux bridge
// per network with an anycast gateway, a tap per VM NIC, a VXLAN device per
// overlay network with a controller-computed forwarding database, a
// WireGuard interface carrying the overlay between nodes, and an nftables
// table for isolation and opt-in egress masquerade (DESIGN §8).
//
// Reconcile is declarative and idempotent. Every object netfabric creates is
// recognisable by name (links start with Options.IfPrefix, the nftables
// tables are called "otherix"), so a Fabric started after a crash lists what
// is there and converges from it; objects with other names are never
// touched.
package netfabric

import (
	"net"
	"net/netip"

	"github.com/otherix/otherix/nodeagent/hostroutes"
)

// Network types.
const (
	// TypeOverlay is a network stretched across nodes by VXLAN over WireGuard.
	TypeOverlay = "overlay"
	// TypeLocal is a network with a bridge on each node and no cross-node traffic.
	TypeLocal = "local"
)

// GatewayIP is the anycast gateway every network bridge presents on every node.
var GatewayIP = netip.MustParseAddr("169.254.1.1")

// Network is one VM network present on this node.
type Network struct {
	// ID is the control plane's stable network id; link names derive from it.
	ID string
	// Name is the human name, recorded as the bridge's alias.
	Name string
	// CIDR is the IPv4 subnet of the network, routed to the bridge.
	CIDR netip.Prefix
	// Type is TypeOverlay or TypeLocal.
	Type string
	// VNI is the VXLAN network identifier (overlay only).
	VNI uint32
	// MTU of the bridge, taps and VXLAN device; 0 means DefaultOverlayMTU.
	MTU int
	// Egress enables masquerade of the network's traffic leaving the node.
	Egress bool
	// GatewayMAC is the deterministic MAC of the anycast gateway; nil means
	// GatewayMACFor(ID).
	GatewayMAC net.HardwareAddr
}

// NIC is one VM network interface: a tap handed to QEMU.
type NIC struct {
	// VMID is the VM the NIC belongs to.
	VMID string
	// Index is the NIC's position in the VM.
	Index int
	// Network is the id of the Network the tap is attached to.
	Network string
	// MAC is the guest's MAC address (the tap itself keeps its own).
	MAC net.HardwareAddr
	// IP is the guest's address, informational here.
	IP netip.Addr
}

// FDBEntry maps a VM MAC on an overlay network to the tunnel IP of the node
// that hosts it. An entry with a zero or nil MAC is a flood entry: broadcast,
// unknown unicast and multicast frames are sent to Remote.
type FDBEntry struct {
	// Network is the overlay network id.
	Network string
	// MAC is the remote VM's MAC address.
	MAC net.HardwareAddr
	// Remote is the peer node's tunnel IP.
	Remote netip.Addr
}

// Peer is another node of the WireGuard mesh.
type Peer struct {
	// PublicKey is the peer's base64 WireGuard public key.
	PublicKey string
	// Endpoint is the peer's underlay address and WireGuard port.
	Endpoint netip.AddrPort
	// TunnelIP is the peer's address inside the mesh (allowed IP /32).
	TunnelIP netip.Addr
}

// Desired is the complete data plane a node should have.
type Desired struct {
	// Networks present on this node.
	Networks []Network
	// NICs of the VMs on this node.
	NICs []NIC
	// FDB is the overlay forwarding database computed by the control plane.
	FDB []FDBEntry
	// Peers is the WireGuard peer set.
	Peers []Peer
	// TunnelIP is this node's WireGuard address with the mesh prefix length;
	// the zero prefix means no WireGuard interface (and no overlay).
	TunnelIP netip.Prefix
	// ListenPort is the WireGuard UDP port; 0 means DefaultListenPort.
	ListenPort int
	// WireGuardMTU is the WireGuard interface's MTU, the underlay's less
	// WireGuard's overhead; 0 means DefaultWireGuardMTU. An overlay
	// network's MTU must leave room for VXLAN inside it.
	WireGuardMTU int
}

// Report says what a Reconcile changed.
type Report struct {
	// Changes counts the mutations made; 0 means the node already matched.
	Changes int
	// Actions describes each mutation, in order.
	Actions []string
	// WireGuard is the implementation in use: "kernel", "userspace" or "".
	WireGuard string
	// TunnelOffload says userspace WireGuard's TUN takes VXLAN in UDP
	// tunnel GSO batches (nodeagent/wgtun).
	TunnelOffload bool
	// HostPrefixes are the prefixes the host already uses (not counting
	// the links netfabric owns), broadest first, at most MaxHostPrefixes.
	HostPrefixes []hostroutes.Entry
	// Conflicts are the claims that overlapped them: Reconcile refused.
	Conflicts []hostroutes.Conflict
}

func (r *Report) add(format string, args ...any) {
	r.Changes++
	r.Actions = append(r.Actions, sprintf(format, args...))
}

// Defaults from DESIGN §8.
const (
	DefaultWireGuardMTU = 1440
	DefaultOverlayMTU   = 1390
	// vxlanOverhead is what VXLAN adds inside WireGuard: outer IPv4, UDP,
	// VXLAN and the inner Ethernet header.
	vxlanOverhead = 50
	// maxMTU is the largest underlay MTU the settings allow.
	maxMTU            = 9216
	DefaultListenPort = 51820
	VXLANPort         = 4789
	DefaultIfPrefix   = "ox"
	TableName         = "otherix"
)
