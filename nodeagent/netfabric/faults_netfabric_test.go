//go:build netfabric

package netfabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Faults from issue #7: a node that loses its WireGuard peer, an agent
// restarted in the middle of a reconcile, and a node leaving a three-node
// overlay.

// twoNodes is TestOverlay's topology reduced to one overlay network: an
// underlay bridge, nodes a and b, and one endpoint on each.
type twoNodes struct {
	ul         *testNS
	bRole      string
	a, b       *node
	epA, epB   *testNS
	desA, desB Desired
}

func newTwoNodes(t *testing.T, tag string) *twoNodes {
	t.Helper()
	ul := newNS(t, "ul"+tag)
	must(t, ul.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
	br0 := ul.link(t, "br0")
	must(t, ul.nl.LinkSetUp(br0))
	a := newNode(t, ul, br0, "a"+tag, netip.MustParseAddr("192.168.50.1"), netip.MustParsePrefix("10.99.0.1/24"))
	b := newNode(t, ul, br0, "b"+tag, netip.MustParseAddr("192.168.50.2"), netip.MustParsePrefix("10.99.0.2/24"))
	peers := []Peer{peerOf(a), peerOf(b)}
	x := &twoNodes{ul: ul, bRole: "b" + tag, a: a, b: b}
	x.desA = Desired{Networks: []Network{net1}, FDB: []FDBEntry{{Network: net1.ID, MAC: macB, Remote: b.tunnel.Addr()}}, Peers: peers, TunnelIP: a.tunnel}
	x.desB = Desired{Networks: []Network{net1}, FDB: []FDBEntry{{Network: net1.ID, MAC: macA, Remote: a.tunnel.Addr()}}, Peers: peers, TunnelIP: b.tunnel}
	a.reconcile(t, x.desA)
	b.reconcile(t, x.desB)
	x.epA = endpoint(t, a, "ep"+tag+"a", net1, macA, "10.10.0.2/24")
	x.epB = endpoint(t, b, "ep"+tag+"b", net1, macB, "10.10.0.3/24")
	udpEcho(t, x.epA, "0.0.0.0:9000")
	udpEcho(t, x.epB, "0.0.0.0:9000")
	return x
}

func peerOf(n *node) Peer {
	return Peer{PublicKey: n.fab.PublicKey(), Endpoint: netip.AddrPortFrom(n.underlay, DefaultListenPort), TunnelIP: n.tunnel.Addr()}
}

// endpoint is a VM-like namespace on network nw of node n: a veth enslaved
// to the network's bridge stands in for a tap.
func endpoint(t *testing.T, n *node, role string, nw Network, mac net.HardwareAddr, cidr string) *testNS {
	t.Helper()
	ep := newNS(t, role)
	n.ns.vethInto(t, "vm"+role, n.ns.link(t, n.fab.bridgeName(nw.ID)), ep, "eth0", nw.MTU, mac)
	ep.addAddr(t, "eth0", cidr)
	ep.vmRoutes(t, "eth0")
	return ep
}

// reaches probes dst from ep until a reply or the deadline; it reports how
// long the first reply took.
func reaches(t *testing.T, ep *testNS, dst string, deadline time.Duration) (bool, time.Duration) {
	t.Helper()
	start := time.Now()
	got := udpProbe(t, ep, dst, 64, deadline)
	return got != "", time.Since(start)
}

// logPaths logs what decides whether the overlay between nodes carries
// traffic, so that a failure says why: each node's WireGuard peers (endpoint,
// last handshake, bytes) and its IPv4 neighbours on the underlay.
func logPaths(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		if n.fab.wg == nil {
			t.Logf("%s: no wireguard device", n.ns.name)
			continue
		}
		dev, err := n.fab.wg.client.Device(n.fab.opts.WireGuardIf)
		if err != nil {
			t.Logf("%s: read wireguard: %v", n.ns.name, err)
			continue
		}
		for _, p := range dev.Peers {
			hs := "never"
			if !p.LastHandshakeTime.IsZero() {
				hs = time.Since(p.LastHandshakeTime).Round(time.Millisecond).String() + " ago"
			}
			t.Logf("%s: wg peer %s endpoint %v handshake %s rx %d tx %d", n.ns.name, p.PublicKey, p.Endpoint, hs, p.ReceiveBytes, p.TransmitBytes)
		}
		if l, err := n.ns.nl.LinkByName("eth0"); err == nil {
			neighs, _ := n.ns.nl.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
			for _, nb := range neighs {
				t.Logf("%s: underlay neighbour %s %s state %#x", n.ns.name, nb.IP, nb.HardwareAddr, nb.State)
			}
			t.Logf("%s: eth0 oper %v flags %v", n.ns.name, l.Attrs().OperState, l.Attrs().Flags)
		}
	}
}

// TestPeerLoss takes node b away from node a in two ways and checks the
// overlay stops, then comes back without any manual step when b returns.
func TestPeerLoss(t *testing.T) {
	requireRoot(t)
	x := newTwoNodes(t, "p")
	if ok, d := reaches(t, x.epA, "10.10.0.3:9000", 15*time.Second); !ok {
		logPaths(t, x.a, x.b)

		t.Fatalf("overlay a → b never came up")
	} else {
		t.Logf("overlay up after %v", d.Round(time.Millisecond))
	}

	t.Run("peer underlay link down and up", func(t *testing.T) {
		// The underlay bridge's port towards b: a cable pulled out and put
		// back. Nothing reconciles in between.
		port := x.ul.link(t, "u"+x.bRole)
		must(t, x.ul.nl.LinkSetDown(port))
		if ok, _ := reaches(t, x.epA, "10.10.0.3:9000", 2*time.Second); ok {
			logPaths(t, x.a, x.b)

			t.Fatalf("overlay still carried traffic with b's underlay link down")
		}
		// Stay away past a WireGuard handshake retry (REKEY_TIMEOUT, 5 s) so
		// that a's handshake attempts towards b fail before b returns.
		time.Sleep(4 * time.Second)
		must(t, x.ul.nl.LinkSetUp(port))
		ok, d := reaches(t, x.epA, "10.10.0.3:9000", 30*time.Second)
		if !ok {
			logPaths(t, x.a, x.b)

			t.Fatalf("overlay a → b did not resume within 30 s of b's link coming back")
		}
		t.Logf("a → b resumed %v after b's link came back", d.Round(time.Millisecond))
		if ok, _ := reaches(t, x.epB, "10.10.0.2:9000", 10*time.Second); !ok {
			logPaths(t, x.a, x.b)

			t.Errorf("overlay b → a did not resume")
		}
	})

	t.Run("peer removed from desired and restored", func(t *testing.T) {
		// What the control plane sends when b misses its heartbeats: both
		// nodes drop each other from their peer sets (the FDB stays).
		dropA, dropB := x.desA, x.desB
		dropA.Peers = []Peer{peerOf(x.a)}
		dropB.Peers = []Peer{peerOf(x.b)}
		if rep := x.a.reconcile(t, dropA); rep.Changes != 1 {
			t.Errorf("dropping b on a made %d changes: %v", rep.Changes, rep.Actions)
		}
		x.b.reconcile(t, dropB)
		if ok, _ := reaches(t, x.epA, "10.10.0.3:9000", 2*time.Second); ok {
			logPaths(t, x.a, x.b)

			t.Fatalf("overlay still carried traffic with the peer removed on both nodes")
		}
		// b comes back: the next heartbeats restore the full peer sets.
		x.b.reconcile(t, x.desB)
		x.a.reconcile(t, x.desA)
		ok, d := reaches(t, x.epA, "10.10.0.3:9000", 30*time.Second)
		if !ok {
			logPaths(t, x.a, x.b)

			t.Fatalf("overlay a → b did not resume within 30 s of the peer returning")
		}
		t.Logf("a → b resumed %v after the peer sets were restored", d.Round(time.Millisecond))
		for _, n := range []*node{x.a, x.b} {
			des := x.desA
			if n == x.b {
				des = x.desB
			}
			if rep := n.reconcile(t, des); rep.Changes != 0 {
				t.Errorf("%s: rerun after the peer returned changed %v", n.ns.name, rep.Actions)
			}
		}
	})

	t.Run("peer removed on one side only", func(t *testing.T) {
		// Only a forgets b (a heartbeat reached a first): a drops b's
		// handshakes, so traffic stops both ways until a learns b again.
		dropA := x.desA
		dropA.Peers = []Peer{peerOf(x.a)}
		x.a.reconcile(t, dropA)
		if ok, _ := reaches(t, x.epB, "10.10.0.2:9000", 2*time.Second); ok {
			logPaths(t, x.a, x.b)

			t.Fatalf("b still reached a after a dropped b from its peers")
		}
		x.a.reconcile(t, x.desA)
		ok, d := reaches(t, x.epB, "10.10.0.2:9000", 30*time.Second)
		if !ok {
			logPaths(t, x.a, x.b)

			t.Fatalf("overlay b → a did not resume within 30 s")
		}
		t.Logf("b → a resumed %v after a re-added b", d.Round(time.Millisecond))
	})
}

// cancelAt is a context whose Err turns to context.Canceled on its n-th
// call. Reconcile checks its context once before each step (sysctl,
// wireguard, links, fdb, nftables), so n picks the step boundary at which
// the agent "dies".
type cancelAt struct {
	context.Context
	n, calls int
}

func (c *cancelAt) Err() error {
	c.calls++
	if c.calls >= c.n {
		return context.Canceled
	}
	return nil
}

// ownedState lists everything Otherix owns in a node namespace, in a form
// comparable across namespaces: the WireGuard interface's name reads "WG".
func ownedState(t *testing.T, n *testNS, fab *Fabric) []string {
	t.Helper()
	wgName := fab.opts.WireGuardIf
	norm := func(s string) string { return strings.ReplaceAll(s, wgName, "WG") }
	links, err := n.nl.LinkList()
	must(t, err)
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		if fab.ownedKind(a.Name) == "" && a.Name != wgName {
			continue
		}
		up := a.Flags&net.FlagUp != 0
		s := fmt.Sprintf("link %s %s mtu %d master %q up %v", a.Name, l.Type(), a.MTU, names[a.MasterIndex], up)
		if l.Type() == "bridge" {
			s += " mac " + a.HardwareAddr.String() + " alias " + a.Alias
		}
		if vx, ok := l.(*netlink.Vxlan); ok {
			s += fmt.Sprintf(" vni %d src %s port %d learning %v", vx.VxlanId, vx.SrcAddr, vx.Port, vx.Learning)
			for _, e := range fdbOf(t, n, a.Name) {
				out = append(out, "fdb "+a.Name+" "+e)
			}
		}
		out = append(out, norm(s))
		addrs, err := n.nl.AddrList(l, netlink.FAMILY_V4)
		must(t, err)
		for _, ad := range addrs {
			out = append(out, norm(fmt.Sprintf("addr %s %s", a.Name, ad.IPNet)))
		}
		routes, err := n.nl.RouteList(l, netlink.FAMILY_V4)
		must(t, err)
		for _, r := range routes {
			out = append(out, norm(fmt.Sprintf("route %s %v scope %d", a.Name, r.Dst, r.Scope)))
		}
	}
	c := nftConn(t, n)
	for _, fam := range nftFamilies {
		tables, err := c.ListTablesOfFamily(fam)
		must(t, err)
		for _, tb := range tables {
			if tb.Name != TableName {
				continue
			}
			out = append(out, fmt.Sprintf("table %d %s", fam, tb.Name))
			chains, err := c.ListChainsOfTableFamily(fam)
			must(t, err)
			for _, ch := range chains {
				if ch.Table.Name != TableName {
					continue
				}
				rules, err := c.GetRules(ch.Table, ch)
				must(t, err)
				for i, r := range rules {
					cm, _ := userdata.GetString(r.UserData, userdata.TypeComment)
					out = append(out, norm(fmt.Sprintf("rule %d %s %02d %s", fam, ch.Name, i, cm)))
				}
			}
		}
	}
	if fab.wg != nil {
		dev, err := fab.wg.client.Device(wgName)
		must(t, err)
		out = append(out, fmt.Sprintf("wg port %d key %s", dev.ListenPort, dev.PublicKey))
		for _, p := range dev.Peers {
			out = append(out, fmt.Sprintf("wg peer %s endpoint %v allowed %v keepalive %v", p.PublicKey, p.Endpoint, p.AllowedIPs, p.PersistentKeepaliveInterval))
		}
	}
	sort.Strings(out)
	return out
}

// TestRestartMidReconcile stops a Reconcile at every step boundary while it
// moves a node from one state to another, throws the Fabric away as a
// crashed agent would, and checks that a new Fabric on the same namespace
// reaches exactly the state a clean reconcile reaches, then stays there.
func TestRestartMidReconcile(t *testing.T) {
	requireRoot(t)
	peerKey := func() string {
		k, err := wgtypes.GeneratePrivateKey()
		must(t, err)
		return k.PublicKey().String()
	}
	p1, p2, p3 := peerKey(), peerKey(), peerKey()
	n3 := Network{ID: "net-3", Name: "green", CIDR: netip.MustParsePrefix("10.30.0.0/24"), Type: TypeOverlay, VNI: 103, MTU: 1390}
	n4 := Network{ID: "net-4", Name: "grey", CIDR: netip.MustParsePrefix("10.40.0.0/24"), Type: TypeOverlay, VNI: 104, MTU: 1390, Egress: true}
	tunnel := netip.MustParsePrefix("10.99.0.1/24")
	// From: blue (overlay), red (local), green (overlay); peers 1 and 2.
	from := Desired{
		Networks: []Network{net1, net2, n3},
		NICs:     []NIC{{VMID: "vm-1", Network: net2.ID, MAC: macR}},
		FDB: []FDBEntry{
			{Network: net1.ID, MAC: macB, Remote: netip.MustParseAddr("10.99.0.2")},
			{Network: n3.ID, MAC: macA, Remote: netip.MustParseAddr("10.99.0.3")},
		},
		Peers: []Peer{
			{PublicKey: p1, Endpoint: netip.MustParseAddrPort("192.168.77.2:51820"), TunnelIP: netip.MustParseAddr("10.99.0.2")},
			{PublicKey: p2, Endpoint: netip.MustParseAddrPort("192.168.77.3:51820"), TunnelIP: netip.MustParseAddr("10.99.0.3")},
		},
		TunnelIP: tunnel,
	}
	// To: red and its tap gone, green's VNI changed (the device must be
	// recreated), grey added, blue's FDB moved, peer 2 replaced by peer 3.
	n3b := n3
	n3b.VNI = 113
	n3b.Egress = true
	to := Desired{
		Networks: []Network{net1, n3b, n4},
		FDB: []FDBEntry{
			{Network: net1.ID, MAC: macB, Remote: netip.MustParseAddr("10.99.0.4")},
			{Network: n3b.ID, MAC: macA, Remote: netip.MustParseAddr("10.99.0.2")},
			{Network: n4.ID, MAC: macR, Remote: netip.MustParseAddr("10.99.0.4")},
		},
		Peers: []Peer{
			{PublicKey: p1, Endpoint: netip.MustParseAddrPort("192.168.77.2:51820"), TunnelIP: netip.MustParseAddr("10.99.0.2")},
			{PublicKey: p3, Endpoint: netip.MustParseAddrPort("192.168.77.4:51820"), TunnelIP: netip.MustParseAddr("10.99.0.4")},
		},
		TunnelIP: tunnel,
	}
	ctx := context.Background()
	pid := os.Getpid() % 1000000
	newFab := func(t *testing.T, ns *testNS, wgIf, keyDir string) *Fabric {
		t.Helper()
		// No Logf: the made-up peers are unreachable, and wireguard-go
		// would log every failed handshake.
		fab, err := New(Options{Netns: ns.path, WireGuardIf: wgIf, KeyDir: keyDir})
		must(t, err)
		t.Cleanup(func() { fab.Close() })
		return fab
	}

	// The reference: "to" applied in one go in a fresh namespace.
	ref := newNS(t, "ref")
	refFab := newFab(t, ref, fmt.Sprintf("oxr%dx", pid), t.TempDir())
	if _, err := refFab.Reconcile(ctx, to); err != nil {
		t.Fatalf("reference reconcile: %v", err)
	}
	want := ownedState(t, ref, refFab)
	// The WireGuard key differs per node: compare everything else.
	dropKey := func(s []string) []string {
		return slices.DeleteFunc(slices.Clone(s), func(l string) bool { return strings.HasPrefix(l, "wg port") })
	}

	steps := []string{"sysctl", "wireguard", "links", "fdb", "nftables"}
	for i, step := range steps {
		t.Run("killed before "+step, func(t *testing.T) {
			ns := newNS(t, fmt.Sprintf("mid%d", i))
			wgIf := fmt.Sprintf("oxr%d%d", pid, i)
			keyDir := t.TempDir()
			fab := newFab(t, ns, wgIf, keyDir)
			if _, err := fab.Reconcile(ctx, from); err != nil {
				t.Fatalf("reconcile from: %v", err)
			}
			before := ownedState(t, ns, fab)
			rep, err := fab.Reconcile(&cancelAt{Context: ctx, n: i + 1}, to)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted reconcile: %v, want context.Canceled", err)
			}
			t.Logf("done before the kill: %d changes %v", rep.Changes, rep.Actions)
			// The agent dies: its userspace WireGuard device goes with it.
			must(t, fab.Close())
			mid := ownedState(t, ns, fab)

			fab2 := newFab(t, ns, wgIf, keyDir)
			rep, err = fab2.Reconcile(ctx, to)
			if err != nil {
				t.Fatalf("reconcile after restart: %v (actions %v)", err, rep.Actions)
			}
			got := ownedState(t, ns, fab2)
			if !slices.Equal(dropKey(got), dropKey(want)) {
				t.Errorf("state after restart differs from a clean reconcile\nbefore: %s\nafter the kill: %s\ngot:  %s\nwant: %s",
					strings.Join(before, "\n  "), strings.Join(mid, "\n  "), strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			for _, l := range got {
				if strings.Contains(l, fab.bridgeName(net2.ID)) || strings.Contains(l, fab.TapName(from.NICs[0])) {
					t.Errorf("leaked object of the removed network: %s", l)
				}
			}
			t.Logf("owned objects: %d with the old state, %d after the kill, %d after the restart (a clean reconcile: %d)", len(before), len(mid), len(got), len(want))
			rep, err = fab2.Reconcile(ctx, to)
			if err != nil || rep.Changes != 0 {
				t.Errorf("second rerun: %d changes %v, err %v", rep.Changes, rep.Actions, err)
			}
		})
	}

	t.Run("cancelled by a deadline mid-way", func(t *testing.T) {
		// A real context cancelled from another goroutine once the links
		// step has started (its first new bridge exists): the step runs to
		// its end, the ones after it do not.
		ns := newNS(t, "midc")
		wgIf := fmt.Sprintf("oxr%dc", pid)
		keyDir := t.TempDir()
		fab := newFab(t, ns, wgIf, keyDir)
		if _, err := fab.Reconcile(ctx, from); err != nil {
			t.Fatalf("reconcile from: %v", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for cctx.Err() == nil {
				if ns.hasLink(fab.bridgeName(n4.ID)) {
					cancel()
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
		}()
		rep, err := fab.Reconcile(cctx, to)
		cancel()
		<-done
		t.Logf("interrupted reconcile: %d changes, err %v", rep.Changes, err)
		must(t, fab.Close())
		fab2 := newFab(t, ns, wgIf, keyDir)
		if _, err := fab2.Reconcile(ctx, to); err != nil {
			t.Fatalf("reconcile after restart: %v", err)
		}
		if got := ownedState(t, ns, fab2); !slices.Equal(dropKey(got), dropKey(want)) {
			t.Errorf("state after restart differs from a clean reconcile\ngot:  %s\nwant: %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		if rep, err := fab2.Reconcile(ctx, to); err != nil || rep.Changes != 0 {
			t.Errorf("second rerun: %v, err %v", rep.Actions, err)
		}
	})
}

// TestThreeNodes puts one endpoint per node on one overlay network across
// three nodes, checks all six directions, then removes node c from a's and
// b's peers and FDB: only traffic to and from c stops.
func TestThreeNodes(t *testing.T) {
	requireRoot(t)
	ul := newNS(t, "ul3")
	must(t, ul.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
	br0 := ul.link(t, "br0")
	must(t, ul.nl.LinkSetUp(br0))
	macC := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0x0d}
	nodes := []*node{
		newNode(t, ul, br0, "a3", netip.MustParseAddr("192.168.50.1"), netip.MustParsePrefix("10.99.0.1/24")),
		newNode(t, ul, br0, "b3", netip.MustParseAddr("192.168.50.2"), netip.MustParsePrefix("10.99.0.2/24")),
		newNode(t, ul, br0, "c3", netip.MustParseAddr("192.168.50.3"), netip.MustParsePrefix("10.99.0.3/24")),
	}
	macs := []net.HardwareAddr{macA, macB, macC}
	ips := []string{"10.10.0.2", "10.10.0.3", "10.10.0.4"}
	var peers []Peer
	for _, n := range nodes {
		peers = append(peers, peerOf(n))
	}
	// desired is node i's state with the nodes in present as its mesh.
	desired := func(i int, present []int) Desired {
		d := Desired{Networks: []Network{net1}, TunnelIP: nodes[i].tunnel}
		for _, j := range present {
			d.Peers = append(d.Peers, peers[j])
			if j != i {
				d.FDB = append(d.FDB, FDBEntry{Network: net1.ID, MAC: macs[j], Remote: nodes[j].tunnel.Addr()})
			}
		}
		return d
	}
	all := []int{0, 1, 2}
	for i, n := range nodes {
		n.reconcile(t, desired(i, all))
	}
	eps := make([]*testNS, 3)
	for i, n := range nodes {
		eps[i] = endpoint(t, n, fmt.Sprintf("ep3%d", i), net1, macs[i], ips[i]+"/24")
		udpEcho(t, eps[i], "0.0.0.0:9000")
	}
	check := func(t *testing.T, i, j int, want bool, wait time.Duration) {
		t.Helper()
		got := udpProbe(t, eps[i], ips[j]+":9000", 64, wait)
		switch {
		case want && !strings.HasSuffix(got, " from "+ips[i]):
			t.Errorf("endpoint %d → %d: reply %q, want one from %s", i, j, got, ips[i])
		case !want && got != "":
			t.Errorf("endpoint %d → %d: reply %q, want none", i, j, got)
		}
	}

	t.Run("all pairs reach each other", func(t *testing.T) {
		for i := range 3 {
			for j := range 3 {
				if i != j {
					check(t, i, j, true, 15*time.Second)
				}
			}
		}
	})

	t.Run("node c removed from the others", func(t *testing.T) {
		for _, i := range []int{0, 1} {
			rep := nodes[i].reconcile(t, desired(i, []int{0, 1}))
			// The peer, c's MAC and c's flood entry.
			if rep.Changes != 3 {
				t.Errorf("node %d: removing c made %d changes: %v", i, rep.Changes, rep.Actions)
			}
		}
		for _, i := range []int{0, 1} {
			fdb := fdbOf(t, nodes[i].ns, nodes[i].fab.vxlanName(net1.ID))
			if slices.ContainsFunc(fdb, func(e string) bool { return strings.HasSuffix(e, nodes[2].tunnel.Addr().String()) }) {
				t.Errorf("node %d still forwards to c: %v", i, fdb)
			}
		}
		check(t, 0, 1, true, 5*time.Second)
		check(t, 1, 0, true, 5*time.Second)
		check(t, 0, 2, false, 2*time.Second)
		check(t, 1, 2, false, 2*time.Second)
		check(t, 2, 0, false, 2*time.Second)
		check(t, 2, 1, false, 2*time.Second)
	})

	t.Run("node c back", func(t *testing.T) {
		for _, i := range []int{0, 1} {
			nodes[i].reconcile(t, desired(i, all))
		}
		for i := range 3 {
			for j := range 3 {
				if i != j {
					check(t, i, j, true, 30*time.Second)
				}
			}
		}
	})
}
