package netfabric

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/otherix/otherix/nodeagent/hostroutes"
)

// HostConflictError refuses a Desired state whose addresses or routes would
// overlap prefixes the host already uses. Reconcile returns it before it
// changes anything.
type HostConflictError struct {
	Conflicts []hostroutes.Conflict
}

func (e *HostConflictError) Error() string {
	parts := make([]string, len(e.Conflicts))
	for i, c := range e.Conflicts {
		parts[i] = c.String()
	}
	return "netfabric: refused, the host already routes these prefixes: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrHostConflict) true.
func (e *HostConflictError) Is(target error) bool { return target == ErrHostConflict }

// claims are the prefixes a plan installs on the host: the WireGuard
// address, whose prefix length routes the whole mesh to the interface; each
// network's CIDR, routed to its bridge; and the anycast gateway address on
// the bridges.
func (f *Fabric) claims(p *plan) []hostroutes.Claim {
	var out []hostroutes.Claim
	if tip := p.d.TunnelIP; tip.IsValid() {
		out = append(out, hostroutes.Claim{Prefix: tip.Masked(), Use: "overlay supernet on " + f.opts.WireGuardIf,
			AddressOnly: tip.Bits() == 32})
	}
	for _, np := range p.networks {
		out = append(out, hostroutes.Claim{Prefix: np.CIDR, Use: fmt.Sprintf("network %s on %s", np.Name, np.bridge)})
	}
	if len(p.networks) > 0 {
		out = append(out, hostroutes.Claim{Prefix: netip.PrefixFrom(GatewayIP, 32), Use: "anycast gateway on the bridges", AddressOnly: true})
	}
	return out
}

// owned reports links this Fabric made: their addresses and routes are not
// the host's.
func (f *Fabric) owned(name string) bool {
	return name == f.opts.WireGuardIf || f.ownedKind(name) != ""
}

// hostPrefixes lists what the host already uses in the managed namespace.
func (f *Fabric) hostPrefixes() ([]hostroutes.Entry, error) {
	return hostroutes.Gather(f.nl, hostroutes.Options{ResolvConf: f.opts.ResolvConf, Owned: f.owned, Extra: f.opts.HostExtra})
}

// checkHost refuses a plan that overlaps the host. It reports the host's
// prefixes (compacted for the heartbeat) either way.
func (f *Fabric) checkHost(p *plan, rep *Report) error {
	taken, err := f.hostPrefixes()
	if err != nil {
		return err
	}
	rep.HostPrefixes = hostroutes.Compact(taken, MaxHostPrefixes)
	if c := hostroutes.Check(f.claims(p), taken); len(c) > 0 {
		rep.Conflicts = c
		return &HostConflictError{Conflicts: c}
	}
	return nil
}

// MaxHostPrefixes bounds Report.HostPrefixes (the heartbeat's budget).
const MaxHostPrefixes = 256
