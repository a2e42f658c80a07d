package messages

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Network types.
const (
	// NetworkOverlay spans nodes: a VXLAN segment (VNI) carried inside the
	// WireGuard mesh.
	NetworkOverlay = "overlay"
	// NetworkLocal is a bridge on each node with no cross-node traffic.
	NetworkLocal = "local"
)

// The anycast gateway and DNS forwarder every node presents on every network
// bridge. Guests only ever see these addresses, so they keep working when the
// VM moves to another node.
const (
	AnycastGateway = "169.254.1.1"
	AnycastDNS     = "169.254.1.1"
)

// Bounds of a network's CIDR prefix length: /8 is the largest sensible
// segment, /29 the smallest that leaves room for a few hosts.
const (
	MinNetworkPrefix = 8
	MaxNetworkPrefix = 29
)

// Encapsulation overheads over IPv4: WireGuard (outer IP 20 + UDP 8 + WG 32)
// and VXLAN (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
const (
	WireGuardOverhead = 60
	VXLANOverhead     = 50
	// MinNetworkMTU is the smallest MTU an IPv4 host must accept.
	MinNetworkMTU = 576
)

// Network is a virtual network VMs attach to. Networks are cluster-wide
// infrastructure: admins create and delete them, every user reads them.
// Only egress changes once a network exists (PATCH); the rest is baked into
// the addresses, taps and tunnels of the VMs on it.
type Network struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// CIDR is the IPv4 subnet VMs get addresses from (network address form).
	CIDR string `json:"cidr"`
	Type string `json:"type"`
	// VNI is the VXLAN network identifier of an overlay network (0 for local).
	VNI    int  `json:"vni,omitempty"`
	Egress bool `json:"egress"`
	// MTU is the guest-facing MTU: derived from the settings' underlay MTU
	// unless the creator set a smaller one.
	MTU int `json:"mtu"`
	// Gateway and DNS are the anycast addresses every node answers on.
	Gateway string `json:"gateway"`
	DNS     string `json:"dns"`
	// GatewayMAC is the anycast gateway's MAC, the same on every node.
	GatewayMAC string    `json:"gateway_mac"`
	CreatedAt  time.Time `json:"created_at"`
	// Revision is the etcd mod revision the row was read at (never stored).
	Revision int64 `json:"revision"`
}

// EntityID implements the store's entity contract.
func (n *Network) EntityID() string { return n.ID }

// EntityRevision implements the store's entity contract.
func (n *Network) EntityRevision() int64 { return n.Revision }

// SetEntityRevision implements the store's entity contract.
func (n *Network) SetEntityRevision(r int64) { n.Revision = r }

// CreateNetworkRequest is the body of POST /v1/networks.
type CreateNetworkRequest struct {
	Name string `json:"name"`
	CIDR string `json:"cidr"`
	// Type is overlay (the default) or local.
	Type   string `json:"type,omitempty"`
	Egress bool   `json:"egress,omitempty"`
	// MTU, when set, must not exceed what the encapsulation leaves.
	MTU int `json:"mtu,omitempty"`
}

// NICStatus is one allocated NIC of a VM: the network it is on, its address
// and its MAC. The control plane allocates it in the transaction that
// creates the VM and owns it for the VM's lifetime.
type NICStatus struct {
	Network   string `json:"network"`
	NetworkID string `json:"network_id"`
	IP        string `json:"ip"`
	// PrefixLen is the network's prefix length (the guest's netmask).
	PrefixLen int    `json:"prefix_len"`
	MAC       string `json:"mac"`
	MTU       int    `json:"mtu,omitempty"`
}

// Network error codes clients branch on.
var (
	// ErrNetworkInUse refuses deleting a network VMs are attached to.
	ErrNetworkInUse = &Error{Kind: KindConflict, Code: "network_in_use", Message: "vms are attached to the network; delete them first"}
	// ErrIPInUse refuses a static address another VM holds.
	ErrIPInUse = &Error{Kind: KindConflict, Code: "ip_in_use", Message: "the address is in use"}
	// ErrNetworkExhausted refuses a NIC when the subnet has no free address.
	ErrNetworkExhausted = &Error{Kind: KindConflict, Code: "network_exhausted", Message: "the network has no free address"}
	// ErrNetworkOverlap refuses a CIDR that overlaps another network or the
	// overlay supernet.
	ErrNetworkOverlap = &Error{Kind: KindConflict, Code: "network_overlap", Message: "the cidr overlaps another network"}
	// ErrVNIExhausted refuses an overlay network when the VNI range is used up.
	ErrVNIExhausted = &Error{Kind: KindConflict, Code: "vni_exhausted", Message: "no free vni in the settings' range"}
)

// reserved are IPv4 ranges a network may never use: this-network, loopback,
// link-local (the anycast gateway lives there), multicast and reserved.
var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// ParseNetworkCIDR validates a network CIDR: IPv4, a network address (host
// bits zero), a prefix length from /8 to /29, outside reserved ranges.
func ParseNetworkCIDR(field, cidr string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, Invalid(field, "%q is not an IPv4 CIDR such as 10.10.0.0/24", cidr)
	}
	if p.Masked() != p {
		return netip.Prefix{}, Invalid(field, "%q has host bits set; the network address is %s", cidr, p.Masked())
	}
	if p.Bits() < MinNetworkPrefix || p.Bits() > MaxNetworkPrefix {
		return netip.Prefix{}, Invalid(field, "prefix length must be between /%d and /%d", MinNetworkPrefix, MaxNetworkPrefix)
	}
	for _, r := range reserved {
		if r.Overlaps(p) {
			return netip.Prefix{}, Invalid(field, "%s overlaps the reserved range %s", p, r)
		}
	}
	return p, nil
}

// NetworkMTUs derives the MTUs from the underlay: WireGuard and overlay.
func NetworkMTUs(underlay int) (wireguard, overlay int) {
	return underlay - WireGuardOverhead, underlay - WireGuardOverhead - VXLANOverhead
}

// BuildNetwork validates a create request against the settings and returns
// the network it describes, without id, VNI or time (the store assigns the
// VNI, the caller the id). Overlap with other networks is the store's check.
func BuildNetwork(req CreateNetworkRequest, st Settings) (*Network, error) {
	if err := ValidateName("name", req.Name); err != nil {
		return nil, err
	}
	p, err := ParseNetworkCIDR("cidr", req.CIDR)
	if err != nil {
		return nil, err
	}
	if sn, err := netip.ParsePrefix(st.OverlaySupernet); err == nil && sn.Overlaps(p) {
		return nil, ErrNetworkOverlap.WithDetail("overlaps", st.OverlaySupernet).withMessage(
			fmt.Sprintf("cidr %s overlaps the overlay supernet %s", p, st.OverlaySupernet))
	}
	typ := req.Type
	if typ == "" {
		typ = NetworkOverlay
	}
	_, overlayMTU := NetworkMTUs(st.UnderlayMTU)
	maxMTU := st.UnderlayMTU
	switch typ {
	case NetworkOverlay:
		maxMTU = overlayMTU
	case NetworkLocal:
	default:
		return nil, Invalid("type", "must be %q or %q", NetworkOverlay, NetworkLocal)
	}
	mtu := req.MTU
	if mtu == 0 {
		mtu = maxMTU
	}
	if mtu < MinNetworkMTU || mtu > maxMTU {
		return nil, Invalid("mtu", "must be between %d and %d for a %s network", MinNetworkMTU, maxMTU, typ)
	}
	return &Network{Name: req.Name, CIDR: p.String(), Type: typ, Egress: req.Egress, MTU: mtu,
		Gateway: AnycastGateway, DNS: AnycastDNS}, nil
}

func (e *Error) withMessage(m string) *Error {
	c := *e
	c.Message = m
	return &c
}

// Prefix parses the network's CIDR (validated at creation).
func (n *Network) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(n.CIDR)
	return p
}

// HostRange is the first and last usable address of a subnet: every address
// but the network and broadcast ones. The gateway is the anycast
// 169.254.1.1, outside the subnet, so it takes no host address.
func HostRange(p netip.Prefix) (first, last netip.Addr) {
	first = p.Masked().Addr().Next()
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	v-- // not the broadcast address
	last = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return first, last
}

// ValidateStaticIP checks that a requested address is a usable host address
// of the network.
func ValidateStaticIP(field string, n *Network, ip string) (netip.Addr, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return netip.Addr{}, Invalid(field, "%q is not an IPv4 address", ip)
	}
	p := n.Prefix()
	if !p.Contains(a) {
		return netip.Addr{}, Invalid(field, "%s is outside network %s (%s)", a, n.Name, n.CIDR)
	}
	first, last := HostRange(p)
	if a.Less(first) || last.Less(a) {
		return netip.Addr{}, Invalid(field, "%s is the network or broadcast address of %s", a, n.CIDR)
	}
	return a, nil
}

// GatewayMAC is the anycast gateway's MAC on a network: derived from the
// network id so every node computes the same one. Its first octet is 0x06
// (locally administered, unicast), which keeps it apart from VM NIC MACs
// (0x02).
func GatewayMAC(networkID string) string {
	return hashMAC(0x06, "gateway/"+networkID)
}

// NICMAC is the MAC of a VM's NIC: derived from the VM id and the NIC index,
// locally administered unicast (0x02).
func NICMAC(vmID string, index int) string {
	return hashMAC(0x02, fmt.Sprintf("nic/%s/%d", vmID, index))
}

func hashMAC(first byte, seed string) string {
	h := sha256.Sum256([]byte(seed))
	mac := net.HardwareAddr{first, h[0], h[1], h[2], h[3], h[4]}
	return mac.String()
}

// NICAddresses is the status.addresses view of allocated NICs.
func NICAddresses(nics []NICStatus) []string {
	if len(nics) == 0 {
		return nil
	}
	out := make([]string, 0, len(nics))
	for _, n := range nics {
		out = append(out, n.IP)
	}
	return out
}
