package messages

import (
	"net/netip"
	"strings"
	"time"
)

// Node condition types and reasons. A condition is set from the node's
// heartbeats; these strings are a public contract (make dev and operators'
// scripts grep for them).
const (
	// NodeConditionHostNetworkConflict is True while the agent refuses its
	// data plane because an address or route it would install overlaps a
	// prefix the host already routes; the host is left untouched.
	NodeConditionHostNetworkConflict = "HostNetworkConflict"
	// ReasonPrefixOverlapsHost: at least one prefix collides; the message
	// names each one and what it collides with.
	ReasonPrefixOverlapsHost = "PrefixOverlapsHost"
	// ReasonNoConflict: the data plane's prefixes are clear of the host's.
	ReasonNoConflict = "NoConflict"
)

// Condition statuses.
const (
	ConditionTrue  = "True"
	ConditionFalse = "False"
)

// HostPrefix is one IPv4 prefix a node's host already uses: an address, a
// route, a resolver, the default gateway or the control plane's address.
// Source says which, for people ("route dev eth0", "resolver
// /etc/resolv.conf", "address eth0", "gateway dev eth0", "control plane").
type HostPrefix struct {
	Prefix string `json:"prefix"`
	Source string `json:"source"`
}

// HostConflict is one prefix the agent would install that overlaps one the
// host uses, so it refused to.
type HostConflict struct {
	// Prefix is what the agent would install, Use what for ("overlay
	// supernet on oxwg0", "network web on oxbr1a2b3c4d").
	Prefix string `json:"prefix"`
	Use    string `json:"use"`
	// Taken is the host's prefix it overlaps and Source where that is from.
	Taken  string `json:"taken"`
	Source string `json:"source"`
}

// String is the conflict in one line, as node describe shows it.
func (c HostConflict) String() string {
	return c.Use + " " + c.Prefix + " overlaps " + c.Taken + " (" + c.Source + ")"
}

// Limits of what a heartbeat may carry about the host's prefixes: agents
// compact their list to MaxHostPrefixes (the broadest first).
const (
	MaxHostPrefixes = 256
	maxHostSource   = 96
	// MaxHostConflicts bounds the conflicts a heartbeat carries.
	MaxHostConflicts = 64
)

// ValidateHostPrefixes checks the prefixes a heartbeat reports.
func ValidateHostPrefixes(ps []HostPrefix) error {
	if len(ps) > MaxHostPrefixes {
		return Invalid("host_prefixes", "at most %d entries", MaxHostPrefixes)
	}
	for _, p := range ps {
		if pp, err := netip.ParsePrefix(p.Prefix); err != nil || !pp.Addr().Is4() {
			return Invalid("host_prefixes", "%q is not an IPv4 prefix", p.Prefix)
		}
		if len(p.Source) > maxHostSource {
			return Invalid("host_prefixes", "source longer than %d bytes", maxHostSource)
		}
	}
	return nil
}

// validateConflicts checks the conflicts a heartbeat reports.
func validateConflicts(cs []HostConflict) error {
	if len(cs) > MaxHostConflicts {
		return Invalid("overlay.conflicts", "at most %d entries", MaxHostConflicts)
	}
	for _, c := range cs {
		if len(c.Prefix)+len(c.Use)+len(c.Taken)+len(c.Source) > 4*maxHostSource {
			return Invalid("overlay.conflicts", "entry too long")
		}
	}
	return nil
}

// HostNetworkCondition is the node condition the conflicts reported make.
// prev is the node's condition of the same type, if any: its transition
// time is kept while the status stays.
func HostNetworkCondition(conflicts []HostConflict, prev *Condition, now time.Time) Condition {
	c := Condition{Type: NodeConditionHostNetworkConflict, Status: ConditionFalse, Reason: ReasonNoConflict}
	if len(conflicts) > 0 {
		c.Status, c.Reason = ConditionTrue, ReasonPrefixOverlapsHost
		lines := make([]string, len(conflicts))
		for i, x := range conflicts {
			lines[i] = x.String()
		}
		c.Message = "the agent refused its data plane and left the host untouched: " + strings.Join(lines, "; ")
	}
	c.LastTransitionTime = now.UTC()
	if prev != nil && prev.Status == c.Status {
		c.LastTransitionTime = prev.LastTransitionTime
	}
	return c
}
