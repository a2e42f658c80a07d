package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/netfabric"
	"github.com/vishvananda/netlink"
)

// path is one way from endpoint A to endpoint B: the client runs in a, the
// server in b at dst.
type path struct {
	name string
	a, b *benchNS
	dst  string // endpoint B's address
	// nodes are the node namespaces in between, for link counters.
	nodes []*benchNS
	// fabs are the nodes' fabrics (overlay paths), for their TUN counters.
	fabs []*netfabric.Fabric
}

// buildBare is the floor: endpoint A → node a → veth underlay → node b →
// endpoint B, plain IPv4 routing at the underlay's MTU, no bridge, no tunnel.
func buildBare(rv *reverts, mtu int) (*path, error) {
	na, err := newNS(rv, "bare-na")
	if err != nil {
		return nil, err
	}
	nb, err := newNS(rv, "bare-nb")
	if err != nil {
		return nil, err
	}
	ea, err := newNS(rv, "bare-ea")
	if err != nil {
		return nil, err
	}
	eb, err := newNS(rv, "bare-eb")
	if err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return na.veth("eth0", nil, nb, "eth0", mtu, nil) },
		func() error { return na.addr("eth0", "192.168.60.1/24") },
		func() error { return nb.addr("eth0", "192.168.60.2/24") },
		func() error { return na.veth("vm0", nil, ea, "eth0", mtu, nil) },
		func() error { return nb.veth("vm0", nil, eb, "eth0", mtu, nil) },
		func() error { return na.addr("vm0", "10.60.1.1/24") },
		func() error { return nb.addr("vm0", "10.60.2.1/24") },
		func() error { return ea.addr("eth0", "10.60.1.2/24") },
		func() error { return eb.addr("eth0", "10.60.2.2/24") },
		func() error { return ea.route("0.0.0.0/0", "10.60.1.1") },
		func() error { return eb.route("0.0.0.0/0", "10.60.2.1") },
		func() error { return na.route("10.60.2.0/24", "192.168.60.2") },
		func() error { return nb.route("10.60.1.0/24", "192.168.60.1") },
		func() error { return na.sysctl("/proc/sys/net/ipv4/ip_forward", "1") },
		func() error { return nb.sysctl("/proc/sys/net/ipv4/ip_forward", "1") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("bare underlay: %w", err)
		}
	}
	return &path{name: "bare underlay", a: ea, b: eb, dst: "10.60.2.2", nodes: []*benchNS{na, nb}}, nil
}

// overlayNet is the benchmark's one overlay network, with the MTUs the
// control plane derives from an underlay MTU (1500 → 1440 WireGuard → 1390).
func overlayNet(underlayMTU int) netfabric.Network {
	_, mtu := messages.NetworkMTUs(underlayMTU)
	return netfabric.Network{ID: "bench-net", Name: "bench", CIDR: netip.MustParsePrefix("10.61.0.0/24"), Type: netfabric.TypeOverlay, VNI: 201, MTU: mtu}
}

// buildOverlay is the product path: two node namespaces on a veth underlay,
// a real Fabric in each (mode picks the WireGuard implementation), and an
// endpoint per node on one overlay network. Returns the path and the
// WireGuard implementation the fabrics report.
//
// wgOnly is a diagnostic path over the same fabrics: node a to node b's
// tunnel IP, inside WireGuard but without VXLAN, to tell the tunnel's own
// cost from the encapsulation's.
func buildOverlay(ctx context.Context, rv *reverts, tag, mode string, underlayMTU int, noOffload bool, logf func(string, ...any)) (ov, wgOnly *path, impl string, err error) {
	onet := overlayNet(underlayMTU)
	wgMTU, _ := messages.NetworkMTUs(underlayMTU)
	na, err := newNS(rv, tag+"-na")
	if err != nil {
		return nil, nil, "", err
	}
	nb, err := newNS(rv, tag+"-nb")
	if err != nil {
		return nil, nil, "", err
	}
	if err := na.veth("eth0", nil, nb, "eth0", underlayMTU, nil); err != nil {
		return nil, nil, "", err
	}
	if err := na.addr("eth0", "192.168.61.1/24"); err != nil {
		return nil, nil, "", err
	}
	if err := nb.addr("eth0", "192.168.61.2/24"); err != nil {
		return nil, nil, "", err
	}
	keyDir, err := os.MkdirTemp("", "oxbench-keys")
	if err != nil {
		return nil, nil, "", err
	}
	rv.push(func() error { return os.RemoveAll(keyDir) })
	type nodeT struct {
		ns     *benchNS
		fab    *netfabric.Fabric
		ul     netip.Addr
		tunnel netip.Prefix
		mac    net.HardwareAddr
		ip     string
	}
	nodes := []*nodeT{
		{ns: na, ul: netip.MustParseAddr("192.168.61.1"), tunnel: netip.MustParsePrefix("10.98.0.1/24"), mac: net.HardwareAddr{0x52, 0x54, 0, 0x61, 0, 2}, ip: "10.61.0.2"},
		{ns: nb, ul: netip.MustParseAddr("192.168.61.2"), tunnel: netip.MustParsePrefix("10.98.0.2/24"), mac: net.HardwareAddr{0x52, 0x54, 0, 0x61, 0, 3}, ip: "10.61.0.3"},
	}
	for i, n := range nodes {
		// UAPI sockets are shared by all namespaces: a name per node.
		fab, err := netfabric.New(netfabric.Options{
			Netns: n.ns.path, WireGuard: mode, KeyDir: keyDir, Logf: logf, NoTunnelOffload: noOffload,
			WireGuardIf: fmt.Sprintf("oxb%d%s%d", os.Getpid()%1000000, tag[:1], i),
		})
		if err != nil {
			return nil, nil, "", err
		}
		rv.push(fab.Close)
		n.fab = fab
	}
	var peers []netfabric.Peer
	for _, n := range nodes {
		peers = append(peers, netfabric.Peer{PublicKey: n.fab.PublicKey(), Endpoint: netip.AddrPortFrom(n.ul, netfabric.DefaultListenPort), TunnelIP: n.tunnel.Addr()})
	}
	eps := make([]*benchNS, 2)
	for i, n := range nodes {
		o := nodes[1-i]
		d := netfabric.Desired{
			Networks:     []netfabric.Network{onet},
			FDB:          []netfabric.FDBEntry{{Network: onet.ID, MAC: o.mac, Remote: o.tunnel.Addr()}},
			WireGuardMTU: wgMTU,
			Peers:        peers,
			TunnelIP:     n.tunnel,
		}
		rep, err := n.fab.Reconcile(ctx, d)
		if err != nil {
			return nil, nil, "", fmt.Errorf("reconcile %s: %w", n.ns.name, err)
		}
		impl = rep.WireGuard
		br, err := bridgeOf(n.ns, onet.ID)
		if err != nil {
			return nil, nil, "", err
		}
		ep, err := newNS(rv, fmt.Sprintf("%s-e%d", tag, i))
		if err != nil {
			return nil, nil, "", err
		}
		if err := n.ns.veth("vm0", br, ep, "eth0", onet.MTU, n.mac); err != nil {
			return nil, nil, "", err
		}
		if err := ep.addr("eth0", n.ip+"/24"); err != nil {
			return nil, nil, "", err
		}
		eps[i] = ep
	}
	fabs := []*netfabric.Fabric{nodes[0].fab, nodes[1].fab}
	ov = &path{name: "overlay, " + impl + " wireguard", a: eps[0], b: eps[1], dst: nodes[1].ip, nodes: []*benchNS{na, nb}, fabs: fabs}
	wgOnly = &path{name: impl + " wireguard alone, no VXLAN (diagnostic)", a: na, b: nb, dst: nodes[1].tunnel.Addr().String(), nodes: []*benchNS{na, nb}, fabs: fabs}
	return ov, wgOnly, impl, nil
}

// bridgeOf finds the network's bridge by the alias netfabric gives it
// ("otherix network <id> <name>"): link names are netfabric's business.
func bridgeOf(n *benchNS, netID string) (netlink.Link, error) {
	links, err := n.nl.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Type() == "bridge" && strings.HasPrefix(l.Attrs().Alias, "otherix network "+netID+" ") {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%s: no bridge for network %s", n.name, netID)
}

// offload says how each node's userspace WireGuard TUN batched so far:
// super-packets split on the way in, datagrams coalesced on the way out.
func (p *path) offload() string {
	var out []string
	for i, f := range p.fabs {
		st, ok := f.TunnelOffload()
		if !ok {
			out = append(out, fmt.Sprintf("node %d: no tunnel offload", i))
			continue
		}
		out = append(out, fmt.Sprintf("node %d: %d super-packets read → %d segments, %d datagrams in %d coalesced writes, %d dropped",
			i, st.SuperReads, st.Segments, st.Coalesced, st.CoalescedWrites, st.Dropped))
	}
	return strings.Join(out, "; ")
}

// drops lists the links of the path's node namespaces that dropped or
// failed packets, with their counters.
func (p *path) drops() string {
	var out []string
	for _, n := range p.nodes {
		links, err := n.nl.LinkList()
		if err != nil {
			return err.Error()
		}
		for _, l := range links {
			st := l.Attrs().Statistics
			if st == nil || st.TxDropped+st.RxDropped+st.TxErrors+st.RxErrors == 0 {
				continue
			}
			out = append(out, fmt.Sprintf("%s/%s %s tx %d pkts %d dropped %d errors, rx %d pkts %d dropped %d errors",
				strings.TrimPrefix(n.name, fmt.Sprintf("oxbench-%d-", os.Getpid())), l.Attrs().Name, l.Type(),
				st.TxPackets, st.TxDropped, st.TxErrors, st.RxPackets, st.RxDropped, st.RxErrors))
		}
	}
	if len(out) == 0 {
		return "no drops or errors on the nodes' links"
	}
	return strings.Join(out, "; ")
}
