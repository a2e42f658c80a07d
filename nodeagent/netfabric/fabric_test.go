//go:build netfabric

package netfabric

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
)

var (
	net1 = Network{ID: "net-1", Name: "blue", CIDR: netip.MustParsePrefix("10.10.0.0/24"), Type: TypeOverlay, VNI: 101, MTU: 1390, Egress: true}
	net2 = Network{ID: "net-2", Name: "red", CIDR: netip.MustParsePrefix("10.20.0.0/24"), Type: TypeLocal, MTU: 1390}
	macA = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0x0b}
	macR = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0x0c}
)

// TestOverlay builds an underlay namespace with a bridge, two node
// namespaces and an "outside" namespace on it, runs a Fabric in each node
// and VM-like endpoint namespaces on the network bridges.
func TestOverlay(t *testing.T) {
	requireRoot(t)
	ul := newNS(t, "ul")
	must(t, ul.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}))
	br0 := ul.link(t, "br0")
	must(t, ul.nl.LinkSetUp(br0))

	a := newNode(t, ul, br0, "a", netip.MustParseAddr("192.168.50.1"), netip.MustParsePrefix("10.99.0.1/24"))
	b := newNode(t, ul, br0, "b", netip.MustParseAddr("192.168.50.2"), netip.MustParsePrefix("10.99.0.2/24"))
	out := newNS(t, "out")
	ul.vethInto(t, "uout", br0, out, "eth0", 1500, nil)
	out.addAddr(t, "eth0", "192.168.50.100/24")
	udpEcho(t, out, "0.0.0.0:9000")

	// Foreign objects in node a that must survive every reconcile.
	must(t, a.ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "foreign0"}}))
	foreignTable(t, a.ns)

	peers := []Peer{
		{PublicKey: a.fab.PublicKey(), Endpoint: netip.AddrPortFrom(a.underlay, DefaultListenPort), TunnelIP: a.tunnel.Addr()},
		{PublicKey: b.fab.PublicKey(), Endpoint: netip.AddrPortFrom(b.underlay, DefaultListenPort), TunnelIP: b.tunnel.Addr()},
	}
	desA := Desired{
		Networks: []Network{net1, net2},
		FDB:      []FDBEntry{{Network: net1.ID, MAC: macB, Remote: b.tunnel.Addr()}},
		Peers:    peers, TunnelIP: a.tunnel,
	}
	desB := Desired{
		Networks: []Network{net1},
		FDB:      []FDBEntry{{Network: net1.ID, MAC: macA, Remote: a.tunnel.Addr()}},
		Peers:    peers, TunnelIP: b.tunnel,
	}
	repA := a.reconcile(t, desA)
	repB := b.reconcile(t, desB)
	t.Logf("first reconcile: node a %d changes, node b %d changes, wireguard %s", repA.Changes, repB.Changes, repA.WireGuard)
	if repA.WireGuard == "" || repA.Changes == 0 {
		t.Fatalf("first reconcile report %+v", repA)
	}

	// VM-like endpoints: a veth enslaved to the network bridge stands in for a tap.
	epA := newNS(t, "epa")
	a.ns.vethInto(t, "vma", a.ns.link(t, a.fab.bridgeName(net1.ID)), epA, "eth0", net1.MTU, macA)
	epA.addAddr(t, "eth0", "10.10.0.2/24")
	epA.vmRoutes(t, "eth0")
	epB := newNS(t, "epb")
	b.ns.vethInto(t, "vmb", b.ns.link(t, b.fab.bridgeName(net1.ID)), epB, "eth0", net1.MTU, macB)
	epB.addAddr(t, "eth0", "10.10.0.3/24")
	epB.vmRoutes(t, "eth0")
	epR := newNS(t, "epr")
	a.ns.vethInto(t, "vmr", a.ns.link(t, a.fab.bridgeName(net2.ID)), epR, "eth0", net2.MTU, macR)
	epR.addAddr(t, "eth0", "10.20.0.2/24")
	epR.vmRoutes(t, "eth0")
	udpEcho(t, epB, "0.0.0.0:9000")
	udpEcho(t, epR, "0.0.0.0:9000")
	udpEcho(t, a.ns, "0.0.0.0:53")
	udpEcho(t, a.ns, "0.0.0.0:7000")

	sn := sniff(t, ul, "ua")

	t.Run("overlay across nodes inside wireguard", func(t *testing.T) {
		start := time.Now()
		if got := udpProbe(t, epA, "10.10.0.3:9000", 64, 10*time.Second); !strings.HasSuffix(got, "from 10.10.0.2") {
			for _, n := range []*node{a, b} {
				dev, err := n.fab.wg.client.Device(n.fab.opts.WireGuardIf)
				if err == nil {
					for _, p := range dev.Peers {
						t.Logf("%s: port %d peer %s hs %v rx %d tx %d", n.ns.name, dev.ListenPort, p.Endpoint, p.LastHandshakeTime, p.ReceiveBytes, p.TransmitBytes)
					}
				}
				for _, l := range []string{n.fab.vxlanName(net1.ID), n.fab.opts.WireGuardIf} {
					st := n.ns.link(t, l).Attrs()
					t.Logf("%s %s: %+v flags %v oper %v", n.ns.name, l, *st.Statistics, st.Flags, st.OperState)
				}
			}
			_, total := sn.count(0)
			t.Logf("sniffed %d, wg %v", total, sn.ports)
			t.Fatalf("endpoint a → endpoint b over the overlay: reply %q", got)
		}
		t.Logf("first overlay reply after %v", time.Since(start).Round(time.Millisecond))
		// A datagram filling the overlay MTU crosses without fragmentation
		// trouble: 1390 - 20 (IP) - 8 (UDP).
		if got := udpProbe(t, epA, "10.10.0.3:9000", net1.MTU-28, 3*time.Second); !strings.HasPrefix(got, "1362 from") {
			t.Fatalf("full-MTU datagram over the overlay: reply %q", got)
		}
		sn.close()
		vx, total := sn.count(VXLANPort)
		wg, _ := sn.count(DefaultListenPort)
		t.Logf("underlay port of node a: %d UDP datagrams, %d on the wireguard port, %d on the vxlan port", total, wg, vx)
		if vx != 0 {
			t.Errorf("VXLAN (udp/%d) seen in clear on the underlay %d times", VXLANPort, vx)
		}
		if wg == 0 || wg != total {
			t.Errorf("underlay carried %d UDP datagrams, %d of them WireGuard (udp/%d): want only WireGuard", total, wg, DefaultListenPort)
		}
	})

	t.Run("bulk tcp across the overlay arrives intact, batched by the tun", func(t *testing.T) {
		before, _ := a.fab.TunnelOffload()
		var ln net.Listener
		must(t, inNS(epB.h, func() error {
			var err error
			ln, err = net.Listen("tcp4", "10.10.0.3:7100")
			return err
		}))
		defer ln.Close()
		got := make(chan [32]byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- [32]byte{}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			h := sha256.New()
			io.Copy(h, c)
			var sum [32]byte
			copy(sum[:], h.Sum(nil))
			got <- sum
		}()
		var c net.Conn
		must(t, inNS(epA.h, func() error {
			var err error
			c, err = net.DialTimeout("tcp4", "10.10.0.3:7100", 10*time.Second)
			return err
		}))
		c.SetDeadline(time.Now().Add(60 * time.Second))
		data := make([]byte, 32<<20)
		rand.NewChaCha8([32]byte{3, 4}).Read(data)
		start := time.Now()
		if _, err := c.Write(data); err != nil {
			t.Fatalf("send: %v", err)
		}
		c.Close()
		if sum := <-got; sum != sha256.Sum256(data) {
			t.Fatal("32 MiB over the overlay arrived altered or cut short")
		}
		t.Logf("32 MiB across the overlay in %v", time.Since(start).Round(time.Millisecond))
		stA, okA := a.fab.TunnelOffload()
		stB, okB := b.fab.TunnelOffload()
		if !okA || !okB {
			t.Logf("this kernel's TUN takes no UDP tunnel GSO: wireguard-go's own TUN carried it")
			return
		}
		t.Logf("node a: %+v; node b: %+v", stA, stB)
		if stA.SuperReads == before.SuperReads || stA.Segments-before.Segments < 2*(stA.SuperReads-before.SuperReads) {
			t.Errorf("node a's tun split no VXLAN super-packets: %+v", stA)
		}
		if stB.CoalescedWrites == 0 || stA.Dropped+stB.Dropped != 0 {
			t.Errorf("node b's tun: %+v", stB)
		}
	})

	t.Run("anycast gateway answers with the same MAC on every node", func(t *testing.T) {
		want := GatewayMACFor(net1.ID)
		for _, ep := range []*testNS{epA, epB} {
			// Traffic to the outside resolves the gateway.
			udpProbe(t, ep, "192.168.50.100:9000", 8, time.Second)
			mac := gatewayNeigh(t, ep)
			if !slices.Equal(mac, want) {
				t.Errorf("%s: gateway 169.254.1.1 at %s, want %s", ep.name, mac, want)
			}
		}
	})

	t.Run("egress masquerade only when enabled", func(t *testing.T) {
		if got := udpProbe(t, epA, "192.168.50.100:9000", 8, 3*time.Second); got != "8 from 192.168.50.1" {
			t.Errorf("egress network → outside: reply %q, want the node's address as source", got)
		}
		if got := udpProbe(t, epR, "192.168.50.100:9000", 8, time.Second); got != "" {
			t.Errorf("network without egress reached the outside: %q", got)
		}
	})

	t.Run("egress follows a change in place", func(t *testing.T) {
		flipped := desA
		flipped.Networks = []Network{net1, net2}
		flipped.Networks[0].Egress, flipped.Networks[1].Egress = false, true
		if rep := a.reconcile(t, flipped); rep.Changes == 0 {
			t.Fatal("an egress change changed nothing")
		}
		if got := udpProbe(t, epA, "192.168.50.100:9000", 8, time.Second); got != "" {
			t.Errorf("network whose egress was turned off still reached the outside: %q", got)
		}
		if got := udpProbe(t, epR, "192.168.50.100:9000", 8, 3*time.Second); got != "8 from 192.168.50.1" {
			t.Errorf("network whose egress was turned on: reply %q", got)
		}
		a.reconcile(t, desA)
		if got := udpProbe(t, epA, "192.168.50.100:9000", 8, 3*time.Second); got != "8 from 192.168.50.1" {
			t.Errorf("egress turned back on: reply %q", got)
		}
	})

	t.Run("networks isolated from each other and from the host", func(t *testing.T) {
		if got := udpProbe(t, epA, "10.20.0.2:9000", 8, time.Second); got != "" {
			t.Errorf("blue → red crossed networks: %q", got)
		}
		if got := udpProbe(t, epR, "10.10.0.2:9000", 8, time.Second); got != "" {
			t.Errorf("red → blue crossed networks: %q", got)
		}
		if got := udpProbe(t, epA, "169.254.1.1:53", 8, 2*time.Second); got == "" {
			t.Errorf("VM → gateway DNS port blocked")
		}
		if got := udpProbe(t, epA, "169.254.1.1:7000", 8, time.Second); got != "" {
			t.Errorf("VM reached a host service on the gateway: %q", got)
		}
		if got := udpProbe(t, epA, "192.168.50.1:7000", 8, time.Second); got != "" {
			t.Errorf("VM reached a host service on the node address: %q", got)
		}
		if got := udpProbe(t, epA, b.tunnel.Addr().String()+":9000", 8, time.Second); got != "" {
			t.Errorf("VM reached into the WireGuard mesh: %q", got)
		}
	})

	t.Run("MTUs as configured", func(t *testing.T) {
		for _, c := range []struct {
			n    *node
			link string
			mtu  int
		}{
			{a, a.fab.bridgeName(net1.ID), net1.MTU},
			{a, a.fab.vxlanName(net1.ID), net1.MTU},
			{a, a.fab.bridgeName(net2.ID), net2.MTU},
			{a, a.fab.opts.WireGuardIf, DefaultWireGuardMTU},
			{b, b.fab.vxlanName(net1.ID), net1.MTU},
			{b, b.fab.opts.WireGuardIf, DefaultWireGuardMTU},
		} {
			if got := c.n.ns.link(t, c.link).Attrs().MTU; got != c.mtu {
				t.Errorf("%s mtu %d, want %d", c.link, got, c.mtu)
			}
		}
	})

	t.Run("the wireguard mtu follows the underlay's", func(t *testing.T) {
		jumbo := desA
		jumbo.WireGuardMTU = 8940
		rep := a.reconcile(t, jumbo)
		if got := a.ns.link(t, a.fab.opts.WireGuardIf).Attrs().MTU; got != 8940 || rep.Changes != 1 {
			t.Errorf("wireguard mtu %d after %v, want 8940 in one change", got, rep.Actions)
		}
		a.reconcile(t, desA)
		if got := a.ns.link(t, a.fab.opts.WireGuardIf).Attrs().MTU; got != DefaultWireGuardMTU {
			t.Errorf("wireguard mtu %d back to the default, want %d", got, DefaultWireGuardMTU)
		}
	})

	t.Run("unchanged reconcile changes nothing", func(t *testing.T) {
		var times []time.Duration
		for range 20 {
			start := time.Now()
			rep := a.reconcile(t, desA)
			times = append(times, time.Since(start))
			if rep.Changes != 0 {
				t.Fatalf("rerun changed %d things: %v", rep.Changes, rep.Actions)
			}
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		t.Logf("unchanged reconcile of node a (2 networks, 1 peer, userspace wireguard): median %v, max %v", times[len(times)/2], times[len(times)-1])
	})

	t.Run("fdb follows desired state", func(t *testing.T) {
		moved := desA
		moved.FDB = []FDBEntry{{Network: net1.ID, MAC: macB, Remote: netip.MustParseAddr("10.99.0.7")}}
		rep := a.reconcile(t, moved)
		t.Logf("move: %v", rep.Actions)
		if rep.Changes != 4 { // 2 stale entries out, 2 new in
			t.Errorf("fdb move made %d changes: %v", rep.Changes, rep.Actions)
		}
		got := fdbOf(t, a.ns, a.fab.vxlanName(net1.ID))
		want := []string{"00:00:00:00:00:00 10.99.0.7", macB.String() + " 10.99.0.7"}
		if !slices.Equal(got, want) {
			t.Errorf("fdb %v, want %v", got, want)
		}
		a.reconcile(t, desA)
		if got := udpProbe(t, epA, "10.10.0.3:9000", 8, 3*time.Second); got == "" {
			t.Errorf("overlay broken after fdb restore")
		}
	})

	t.Run("removing a network removes exactly its objects", func(t *testing.T) {
		less := desA
		less.Networks = []Network{net1}
		rep := a.reconcile(t, less)
		t.Logf("remove red: %v", rep.Actions)
		if a.ns.hasLink(a.fab.bridgeName(net2.ID)) {
			t.Errorf("bridge of the removed network still there")
		}
		for _, l := range []string{a.fab.bridgeName(net1.ID), a.fab.vxlanName(net1.ID), a.fab.opts.WireGuardIf, "foreign0", "vma"} {
			if !a.ns.hasLink(l) {
				t.Errorf("link %s gone", l)
			}
		}
		comments := nftComments(t, a.ns)
		for _, c := range comments {
			if strings.Contains(c, a.fab.bridgeName(net2.ID)) {
				t.Errorf("rule of removed network left: %q", c)
			}
		}
		if !slices.ContainsFunc(comments, func(c string) bool { return strings.Contains(c, a.fab.bridgeName(net1.ID)) }) {
			t.Errorf("rules of the remaining network gone: %v", comments)
		}
		if !hasForeignTable(t, a.ns) {
			t.Errorf("foreign nftables table gone")
		}
		if got := udpProbe(t, epA, "10.10.0.3:9000", 8, 3*time.Second); got == "" {
			t.Errorf("overlay broken after removing another network")
		}
		if rep := a.reconcile(t, less); rep.Changes != 0 {
			t.Errorf("rerun after removal changed %v", rep.Actions)
		}
	})

	t.Run("restarted agent converges", func(t *testing.T) {
		// A new Fabric over the same namespace and key directory, as after
		// an agent restart; only the userspace WireGuard device (which dies
		// with its process) has to come back.
		keyDir := a.fab.opts.KeyDir
		pub := a.fab.PublicKey()
		must(t, a.fab.Close())
		// A link leaked by a reconcile interrupted half-way.
		must(t, a.ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "oxbrdeadbeef"}}))
		fab, err := New(Options{Netns: a.ns.path, IfPrefix: "ox", WireGuardIf: a.fab.opts.WireGuardIf, KeyDir: keyDir, Logf: t.Logf})
		must(t, err)
		t.Cleanup(func() {
			if err := fab.Close(); err != nil {
				t.Errorf("close restarted fabric: %v", err)
			}
		})
		a.fab = fab
		if fab.PublicKey() != pub {
			t.Fatalf("key changed across restart")
		}
		less := desA
		less.Networks = []Network{net1}
		rep := a.reconcile(t, less)
		t.Logf("after restart: %v", rep.Actions)
		if a.ns.hasLink("oxbrdeadbeef") {
			t.Errorf("leaked owned bridge not removed")
		}
		if !a.ns.hasLink("foreign0") {
			t.Errorf("foreign bridge removed")
		}
		if got := udpProbe(t, epA, "10.10.0.3:9000", 8, 10*time.Second); got == "" {
			t.Errorf("overlay broken after restart")
		}
		if rep := a.reconcile(t, less); rep.Changes != 0 {
			t.Errorf("rerun after restart changed %v", rep.Actions)
		}
	})
}

func gatewayNeigh(t *testing.T, ep *testNS) net.HardwareAddr {
	t.Helper()
	neighs, err := ep.nl.NeighList(ep.link(t, "eth0").Attrs().Index, netlink.FAMILY_V4)
	must(t, err)
	for _, n := range neighs {
		if n.IP.Equal(net.IP(GatewayIP.AsSlice())) {
			return n.HardwareAddr
		}
	}
	t.Fatalf("%s: no neighbour entry for the gateway", ep.name)
	return nil
}

func fdbOf(t *testing.T, n *testNS, vx string) []string {
	t.Helper()
	l := n.link(t, vx)
	neighs, err := n.nl.NeighList(l.Attrs().Index, 7 /* AF_BRIDGE */)
	must(t, err)
	var out []string
	for _, e := range neighs {
		if e.Flags&netlink.NTF_SELF != 0 && e.IP != nil {
			out = append(out, e.HardwareAddr.String()+" "+e.IP.String())
		}
	}
	sort.Strings(out)
	return out
}

func nftConn(t *testing.T, n *testNS) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.h)))
	must(t, err)
	return c
}

func nftComments(t *testing.T, n *testNS) []string {
	t.Helper()
	c := nftConn(t, n)
	var out []string
	for _, fam := range nftFamilies {
		chains, err := c.ListChainsOfTableFamily(fam)
		must(t, err)
		for _, ch := range chains {
			if ch.Table.Name != TableName {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			must(t, err)
			for _, r := range rules {
				s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				out = append(out, s)
			}
		}
	}
	return out
}

// foreignTable adds an inet table Otherix must never touch.
func foreignTable(t *testing.T, n *testNS) {
	t.Helper()
	c := nftConn(t, n)
	tb := c.AddTable(&nftables.Table{Name: "foreign", Family: nftables.TableFamilyINet})
	c.AddChain(&nftables.Chain{Name: "keep", Table: tb})
	must(t, c.Flush())
}

func hasForeignTable(t *testing.T, n *testNS) bool {
	t.Helper()
	tables, err := nftConn(t, n).ListTablesOfFamily(nftables.TableFamilyINet)
	must(t, err)
	return slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == "foreign" })
}

// TestTaps checks taps are created, attached and removed, and that owned
// leftovers go while foreign links stay, without any WireGuard.
func TestTaps(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "taps")
	must(t, ns.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "oxfoo"}})) // owned prefix, foreign name
	fab, err := New(Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: "oxwtaps"})
	must(t, err)
	t.Cleanup(func() { fab.Close() })
	n := Network{ID: "local-1", Name: "lan", CIDR: netip.MustParsePrefix("10.30.0.0/24"), Type: TypeLocal, MTU: 1400}
	nics := []NIC{{VMID: "vm-1", Index: 0, Network: n.ID, MAC: macA}, {VMID: "vm-2", Index: 0, Network: n.ID, MAC: macB}}
	d := Desired{Networks: []Network{n}, NICs: nics}
	ctx := context.Background()
	rep, err := fab.Reconcile(ctx, d)
	must(t, err)
	if rep.WireGuard != "" {
		t.Errorf("wireguard %q without a tunnel ip", rep.WireGuard)
	}
	br := ns.link(t, fab.bridgeName(n.ID))
	for _, nic := range nics {
		l := ns.link(t, fab.TapName(nic))
		tt, ok := l.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
			t.Errorf("%s is %T, want a tap", l.Attrs().Name, l)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().MTU != n.MTU {
			t.Errorf("%s master %d mtu %d", l.Attrs().Name, l.Attrs().MasterIndex, l.Attrs().MTU)
		}
	}
	if !slices.Equal(br.Attrs().HardwareAddr, GatewayMACFor(n.ID)) || br.Attrs().MTU != n.MTU {
		t.Errorf("bridge mac %s mtu %d", br.Attrs().HardwareAddr, br.Attrs().MTU)
	}
	routes, err := ns.nl.RouteList(br, netlink.FAMILY_V4)
	must(t, err)
	if len(routes) != 1 || routes[0].Dst.String() != n.CIDR.String() {
		t.Errorf("routes via bridge %v", routes)
	}
	if rep, err := fab.Reconcile(ctx, d); err != nil || rep.Changes != 0 {
		t.Errorf("rerun: %v %v", rep.Actions, err)
	}
	// Foreign nftables changes bump the generation but leave ours alone;
	// a deleted otherix table is put back.
	foreignTable(t, ns)
	if rep, err := fab.Reconcile(ctx, d); err != nil || rep.Changes != 0 {
		t.Errorf("rerun after a foreign table appeared: %v %v", rep.Actions, err)
	}
	c := nftConn(t, ns)
	c.DelTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	must(t, c.Flush())
	if rep, err := fab.Reconcile(ctx, d); err != nil || rep.Changes != 1 || len(nftComments(t, ns)) == 0 {
		t.Errorf("rerun after the otherix table was deleted: %v %v", rep.Actions, err)
	}
	// A leaked tap of a VM that is gone.
	stale := NIC{VMID: "vm-gone", Index: 1, Network: n.ID}
	must(t, inNS(ns.h, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: fab.TapName(stale)}, Mode: netlink.TUNTAP_MODE_TAP})
	}))
	d.NICs = nics[:1]
	rep, err = fab.Reconcile(ctx, d)
	must(t, err)
	if ns.hasLink(fab.TapName(nics[1])) || ns.hasLink(fab.TapName(stale)) || !ns.hasLink(fab.TapName(nics[0])) {
		t.Errorf("tap removal: %v", rep.Actions)
	}
	// Two taps, and the nftables tables lose the removed tap's guard.
	if rep.Changes != 3 {
		t.Errorf("removal made %d changes: %v", rep.Changes, rep.Actions)
	}
	if !ns.hasLink("oxfoo") {
		t.Errorf("foreign link with the owned prefix removed")
	}
	// Nothing left: everything owned goes, foreign stays.
	rep, err = fab.Reconcile(ctx, Desired{})
	must(t, err)
	t.Logf("empty: %v", rep.Actions)
	if ns.hasLink(fab.bridgeName(n.ID)) || ns.hasLink(fab.TapName(nics[0])) || !ns.hasLink("oxfoo") {
		t.Errorf("empty desired state: %v", rep.Actions)
	}
	if len(nftComments(t, ns)) != 0 {
		t.Errorf("nftables rules left with no networks")
	}
	if !hasForeignTable(t, ns) {
		t.Errorf("foreign nftables table removed")
	}
}

// TestWireGuardMode checks the implementation choice is reported and that
// forcing kernel WireGuard where the module is missing fails clearly.
func TestWireGuardMode(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "wgmode")
	fab, err := New(Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: "oxwmode", WireGuard: WireGuardKernel})
	must(t, err)
	t.Cleanup(func() { fab.Close() })
	d := Desired{TunnelIP: netip.MustParsePrefix("10.98.0.1/24")}
	_, err = fab.Reconcile(context.Background(), d)
	if err == nil {
		t.Logf("kernel WireGuard available")
		return
	}
	if !errors.Is(err, ErrNoWireGuard) {
		t.Fatalf("forced kernel wireguard: %v, want ErrNoWireGuard", err)
	}
	t.Logf("no kernel WireGuard here: %v", err)
}
