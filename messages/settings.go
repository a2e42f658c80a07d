package messages

import (
	"fmt"
	"net/netip"
	"time"
)

// Settings is the cluster-wide settings document, seeded once at first boot
// and shared by every replica (never copied into a replica's config). An
// admin reads and changes it with GET and PATCH /v1/cluster/settings.
type Settings struct {
	DefaultPool     string   `json:"default_pool"`
	OverlaySupernet string   `json:"overlay_supernet"`
	VNIRange        VNIRange `json:"vni_range"`
	UnderlayMTU     int      `json:"underlay_mtu"`
	// WireGuardPort is the UDP port of every node's WireGuard listener,
	// sent down in each node's desired overlay.
	WireGuardPort int `json:"wireguard_port"`
	// EventRetentionCount and EventRetentionAge bound the lifecycle events
	// kept (/otherix/events): the events loop deletes those older than the
	// age (a Go duration) and then the oldest beyond the count.
	EventRetentionCount int    `json:"event_retention_count"`
	EventRetentionAge   string `json:"event_retention_age"`
	Revision            int64  `json:"revision"`
}

// Defaults of the event retention settings, and their bounds.
const (
	DefaultEventRetentionCount = 10000
	DefaultEventRetentionAge   = "168h"
	MinEventRetentionCount     = 100
	MaxEventRetentionCount     = 1000000
	MinEventRetentionAge       = time.Minute
	MaxEventRetentionAge       = 366 * 24 * time.Hour
)

// EventRetention is the retention as the events loop applies it.
func (s *Settings) EventRetention() (count int, age time.Duration) {
	age, err := time.ParseDuration(s.EventRetentionAge)
	if err != nil {
		age, _ = time.ParseDuration(DefaultEventRetentionAge)
	}
	count = s.EventRetentionCount
	if count <= 0 {
		count = DefaultEventRetentionCount
	}
	return count, age
}

// VNIRange bounds the VXLAN network identifiers overlay networks draw from.
type VNIRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// DefaultOverlaySupernet is the supernet a new cluster's node tunnel
// addresses come from. It is a /16 of the shared address space of RFC 6598
// (100.64.0.0/10): that space is meant for carrier-grade NAT between an ISP
// and its customers' edge routers, so a hypervisor's LAN, management network
// or resolver rarely lives there, unlike 10/8, 172.16/12 and 192.168/16. The
// first /16 (100.64.0.0/16) is avoided because it is the usual pick for
// Kubernetes secondary CIDRs, and 100.100.0.0/16 because Tailscale's resolver
// sits there. docs/networking.md says how to choose another.
const DefaultOverlaySupernet = "100.87.0.0/16"

// DefaultSettings is what a new cluster starts with.
func DefaultSettings() Settings {
	return Settings{
		DefaultPool:     "default",
		OverlaySupernet: DefaultOverlaySupernet,
		VNIRange:        VNIRange{Min: 4096, Max: 16777215},
		UnderlayMTU:     1500,
		WireGuardPort:   WireGuardListenPort,

		EventRetentionCount: DefaultEventRetentionCount,
		EventRetentionAge:   DefaultEventRetentionAge,
	}
}

// Defaults fills what a document written by an older control plane lacks.
func (s *Settings) Defaults() {
	if s.WireGuardPort == 0 {
		s.WireGuardPort = WireGuardListenPort
	}
	if s.EventRetentionCount == 0 {
		s.EventRetentionCount = DefaultEventRetentionCount
	}
	if s.EventRetentionAge == "" {
		s.EventRetentionAge = DefaultEventRetentionAge
	}
}

// Bounds of the overlay supernet's prefix length: a /8 is the widest a
// sensible mesh needs, a /28 still addresses 14 nodes.
const (
	MinSupernetPrefix = 8
	MaxSupernetPrefix = 28
)

// Validate checks a settings document on its own; what it must not collide
// with (networks, tunnel addresses, the nodes' host routes) is checked by
// the control plane when it is changed.
func (s *Settings) Validate() error {
	if err := ValidateName("default_pool", s.DefaultPool); err != nil {
		return err
	}
	if _, err := ParseSupernet("overlay_supernet", s.OverlaySupernet); err != nil {
		return err
	}
	if s.VNIRange.Min < 1 || s.VNIRange.Max > 1<<24-1 || s.VNIRange.Min > s.VNIRange.Max {
		return Invalid("vni_range", "must satisfy 1 <= min <= max <= 16777215")
	}
	if s.UnderlayMTU < 1280 || s.UnderlayMTU > 9216 {
		return Invalid("underlay_mtu", "must be between 1280 and 9216")
	}
	if s.WireGuardPort < 1 || s.WireGuardPort > 65535 {
		return Invalid("wireguard_port", "must be between 1 and 65535")
	}
	if s.EventRetentionCount < MinEventRetentionCount || s.EventRetentionCount > MaxEventRetentionCount {
		return Invalid("event_retention_count", "must be between %d and %d", MinEventRetentionCount, MaxEventRetentionCount)
	}
	if d, err := time.ParseDuration(s.EventRetentionAge); err != nil || d < MinEventRetentionAge || d > MaxEventRetentionAge {
		return Invalid("event_retention_age", "must be a duration such as 168h, between %s and %s", MinEventRetentionAge, MaxEventRetentionAge)
	}
	return nil
}

// ParseSupernet validates an overlay supernet: an IPv4 network address
// from /8 to /28, outside the reserved ranges networks may not use either.
func ParseSupernet(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, Invalid(field, "%q is not an IPv4 prefix such as %s", s, DefaultOverlaySupernet)
	}
	if p.Masked() != p {
		return netip.Prefix{}, Invalid(field, "%q has host bits set; the network address is %s", s, p.Masked())
	}
	if p.Bits() < MinSupernetPrefix || p.Bits() > MaxSupernetPrefix {
		return netip.Prefix{}, Invalid(field, "prefix length must be between /%d and /%d", MinSupernetPrefix, MaxSupernetPrefix)
	}
	for _, r := range reserved {
		if r.Overlaps(p) {
			return netip.Prefix{}, Invalid(field, "%s overlaps the reserved range %s", p, r)
		}
	}
	return p, nil
}

// SettingsPatch is the body of PATCH /v1/cluster/settings: the fields to
// change; absent ones keep their value.
type SettingsPatch struct {
	DefaultPool     *string   `json:"default_pool,omitempty"`
	OverlaySupernet *string   `json:"overlay_supernet,omitempty"`
	VNIRange        *VNIRange `json:"vni_range,omitempty"`
	UnderlayMTU     *int      `json:"underlay_mtu,omitempty"`
	WireGuardPort   *int      `json:"wireguard_port,omitempty"`

	EventRetentionCount *int    `json:"event_retention_count,omitempty"`
	EventRetentionAge   *string `json:"event_retention_age,omitempty"`
}

// Empty says the patch changes nothing.
func (p SettingsPatch) Empty() bool {
	return p.DefaultPool == nil && p.OverlaySupernet == nil && p.VNIRange == nil && p.UnderlayMTU == nil && p.WireGuardPort == nil &&
		p.EventRetentionCount == nil && p.EventRetentionAge == nil
}

// Apply returns s with the patch's fields set.
func (p SettingsPatch) Apply(s Settings) Settings {
	if p.DefaultPool != nil {
		s.DefaultPool = *p.DefaultPool
	}
	if p.OverlaySupernet != nil {
		s.OverlaySupernet = *p.OverlaySupernet
	}
	if p.VNIRange != nil {
		s.VNIRange = *p.VNIRange
	}
	if p.UnderlayMTU != nil {
		s.UnderlayMTU = *p.UnderlayMTU
	}
	if p.WireGuardPort != nil {
		s.WireGuardPort = *p.WireGuardPort
	}
	if p.EventRetentionCount != nil {
		s.EventRetentionCount = *p.EventRetentionCount
	}
	if p.EventRetentionAge != nil {
		s.EventRetentionAge = *p.EventRetentionAge
	}
	return s
}

// Settings error codes clients branch on.
var (
	// ErrSupernetHostConflict refuses an overlay supernet that overlaps a
	// prefix a node's host already routes (its addresses, routes,
	// resolvers, gateway or the control plane's address).
	ErrSupernetHostConflict = &Error{Kind: KindConflict, Code: "supernet_host_conflict",
		Message: "the overlay supernet overlaps a prefix a node's host routes"}
	// ErrSupernetTooSmall refuses an overlay supernet with fewer node
	// addresses than nodes hold (each is re-addressed into it).
	ErrSupernetTooSmall = &Error{Kind: KindConflict, Code: "supernet_too_small",
		Message: "the overlay supernet has fewer addresses than the cluster has nodes"}
	// ErrUnderlayMTUInUse refuses an underlay MTU too small for a network.
	ErrUnderlayMTUInUse = &Error{Kind: KindConflict, Code: "underlay_mtu_in_use",
		Message: "a network's mtu does not fit the new underlay mtu"}
	// ErrVNIRangeInUse refuses a VNI range that leaves out the VNI of an
	// existing overlay network.
	ErrVNIRangeInUse = &Error{Kind: KindConflict, Code: "vni_range_in_use",
		Message: "an overlay network's vni is outside the new range"}
)

// ErrNetworkHostConflict refuses a network whose CIDR overlaps a prefix a
// node's host already routes.
var ErrNetworkHostConflict = &Error{Kind: KindConflict, Code: "network_host_conflict",
	Message: "the cidr overlaps a prefix a node's host routes"}

// NetworkHostConflict is the refusal of cidr for a node whose host
// already routes taken.
func NetworkHostConflict(cidr, node string, taken HostPrefix) *Error {
	e := ErrNetworkHostConflict.WithDetail("node", node).WithDetail("prefix", taken.Prefix).WithDetail("source", taken.Source)
	e.Message = fmt.Sprintf("cidr %s overlaps %s (%s) on node %s; its bridge route would capture the host's traffic",
		cidr, taken.Prefix, taken.Source, node)
	return e
}

// SupernetHostConflict is the refusal of supernet for a node whose host
// already routes taken.
func SupernetHostConflict(supernet, node string, taken HostPrefix) *Error {
	e := ErrSupernetHostConflict.WithDetail("node", node).WithDetail("prefix", taken.Prefix).WithDetail("source", taken.Source)
	e.Message = fmt.Sprintf("overlay supernet %s overlaps %s (%s) on node %s; choose a supernet no node routes",
		supernet, taken.Prefix, taken.Source, node)
	return e
}
