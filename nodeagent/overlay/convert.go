package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/hostroutes"
	"github.com/otherix/otherix/nodeagent/netfabric"
)

// desiredFrom turns the control plane's overlay into netfabric's terms,
// without NICs (they come from the VMs this node runs). A tunnel IP given
// without a prefix length takes the supernet's: the WireGuard interface
// must route the whole mesh, not only its own /32.
func desiredFrom(o *messages.DesiredOverlay, settings messages.Settings) (netfabric.Desired, error) {
	var d netfabric.Desired
	if o.TunnelIP != "" {
		tip, err := parseTunnel(o.TunnelIP, settings.OverlaySupernet)
		if err != nil {
			return d, err
		}
		d.TunnelIP = tip
	}
	d.ListenPort = o.ListenPort
	if settings.UnderlayMTU > 0 {
		d.WireGuardMTU, _ = messages.NetworkMTUs(settings.UnderlayMTU)
	}
	for _, n := range o.Networks {
		cidr, err := netip.ParsePrefix(n.CIDR)
		if err != nil {
			return d, fmt.Errorf("network %s: cidr %q: %w", n.ID, n.CIDR, err)
		}
		nw := netfabric.Network{ID: n.ID, Name: n.Name, CIDR: cidr, Type: n.Type, VNI: uint32(n.VNI), MTU: n.MTU, Egress: n.Egress}
		if n.GatewayMAC != "" {
			mac, err := net.ParseMAC(n.GatewayMAC)
			if err != nil {
				return d, fmt.Errorf("network %s: gateway mac %q: %w", n.ID, n.GatewayMAC, err)
			}
			nw.GatewayMAC = mac
		}
		d.Networks = append(d.Networks, nw)
	}
	for _, p := range o.Peers {
		pe := netfabric.Peer{PublicKey: p.PublicKey}
		if p.Endpoint != "" {
			ep, err := netip.ParseAddrPort(p.Endpoint)
			if err != nil {
				return d, fmt.Errorf("peer %s: endpoint %q: %w", p.Node, p.Endpoint, err)
			}
			pe.Endpoint = ep
		}
		tip, err := parseAddr(p.TunnelIP)
		if err != nil {
			return d, fmt.Errorf("peer %s: tunnel ip: %w", p.Node, err)
		}
		pe.TunnelIP = tip
		d.Peers = append(d.Peers, pe)
	}
	for _, e := range o.FDB {
		fe := netfabric.FDBEntry{Network: e.Network}
		if e.MAC != "" {
			mac, err := net.ParseMAC(e.MAC)
			if err != nil {
				return d, fmt.Errorf("fdb entry of %s: mac %q: %w", e.Network, e.MAC, err)
			}
			fe.MAC = mac
		}
		r, err := parseAddr(e.Remote)
		if err != nil {
			return d, fmt.Errorf("fdb entry of %s: remote: %w", e.Network, err)
		}
		fe.Remote = r
		d.FDB = append(d.FDB, fe)
	}
	return d, nil
}

// parseTunnel reads "ip" or "ip/len"; a bare ip takes the supernet's length.
func parseTunnel(s, supernet string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("tunnel ip %q: %w", s, err)
		}
		if p.Bits() == 32 {
			// A /32 routes nothing: widen it to the mesh.
			if sn, err := netip.ParsePrefix(supernet); err == nil && sn.Contains(p.Addr()) {
				return netip.PrefixFrom(p.Addr(), sn.Bits()), nil
			}
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("tunnel ip %q: %w", s, err)
	}
	if supernet == "" {
		supernet = messages.DefaultSettings().OverlaySupernet
	}
	sn, err := netip.ParsePrefix(supernet)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("overlay supernet %q: %w", supernet, err)
	}
	return netip.PrefixFrom(a, sn.Bits()), nil
}

// parseAddr reads "ip" or "ip/len" (the prefix is dropped).
func parseAddr(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}

// nicsFrom turns a VM's NICs into netfabric's, by position.
func nicsFrom(vmID string, nics []messages.NICStatus) ([]netfabric.NIC, error) {
	out := make([]netfabric.NIC, 0, len(nics))
	for i, n := range nics {
		mac, err := net.ParseMAC(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("vm %s nic %d: mac %q: %w", vmID, i, n.MAC, err)
		}
		nic := netfabric.NIC{VMID: vmID, Index: i, Network: n.NetworkID, MAC: mac}
		if a, err := netip.ParseAddr(n.IP); err == nil {
			nic.IP = a
		}
		out = append(out, nic)
	}
	return out, nil
}

// hostPrefixesOf puts the host's prefixes in the heartbeat's terms.
func hostPrefixesOf(es []hostroutes.Entry) []messages.HostPrefix {
	out := make([]messages.HostPrefix, 0, len(es))
	for _, e := range es {
		out = append(out, messages.HostPrefix{Prefix: e.Prefix.String(), Source: clip(e.Source)})
	}
	return out
}

// conflictsOf puts refused claims in the heartbeat's terms; nil for none.
func conflictsOf(cs []hostroutes.Conflict) []messages.HostConflict {
	if len(cs) == 0 {
		return nil
	}
	cs = cs[:min(len(cs), messages.MaxHostConflicts)]
	out := make([]messages.HostConflict, 0, len(cs))
	for _, c := range cs {
		out = append(out, messages.HostConflict{Prefix: c.Claim.Prefix.String(), Use: clip(c.Claim.Use),
			Taken: c.Taken.Prefix.String(), Source: clip(c.Taken.Source)})
	}
	return out
}

// clip bounds a description to what the heartbeat accepts (a resolv.conf
// path can be long).
func clip(s string) string {
	const max = 96
	if len(s) > max {
		return s[:max-3] + "..."
	}
	return s
}
