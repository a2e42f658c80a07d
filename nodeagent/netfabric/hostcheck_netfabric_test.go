//go:build netfabric

package netfabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// hostState is everything a reconcile could change in a namespace, as the
// tools print it: compared byte for byte before and after a refusal.
func hostState(t *testing.T, ns *testNS) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-n", ns.name, "-d", "link", "show"},
		{"ip", "-n", ns.name, "addr", "show"},
		{"ip", "-n", ns.name, "route", "show", "table", "all"},
		{"ip", "-n", ns.name, "-6", "route", "show", "table", "all"},
		{"ip", "-n", ns.name, "rule", "show"},
		{"ip", "netns", "exec", ns.name, "cat", "/proc/sys/net/ipv4/ip_forward"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		b.WriteString("$ " + strings.Join(args[3:], " ") + "\n")
		b.Write(out)
	}
	// No nft binary on every host: the tables, chains and rules through
	// the library.
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.h)))
	must(t, err)
	defer c.CloseLasting()
	tables, err := c.ListTables()
	must(t, err)
	for _, tb := range tables {
		fmt.Fprintf(&b, "table %d %s\n", tb.Family, tb.Name)
	}
	chains, err := c.ListChains()
	must(t, err)
	for _, ch := range chains {
		rules, err := c.GetRules(ch.Table, ch)
		must(t, err)
		fmt.Fprintf(&b, "chain %s %s: %d rules\n", ch.Table.Name, ch.Name, len(rules))
	}
	return b.String()
}

// TestHostConflictLeavesHostUntouched builds a "host" whose resolver,
// default gateway and LAN sit inside the overlay supernet (as
// 10.255.255.53 sat inside 10.240.0.0/12 on the machines of issue 13), and
// checks that the fabric refuses, names each collision, and leaves links,
// addresses, routes in every table, rules, nftables and forwarding exactly
// as they were; then that a clear supernet is applied.
func TestHostConflictLeavesHostUntouched(t *testing.T) {
	requireRoot(t)
	supernet := "100.87.0.1/16" // messages.DefaultOverlaySupernet's first host
	cases := []struct {
		name     string
		setup    func(t *testing.T, ns *testNS)
		resolver string
		desired  Desired
		want     []string // substrings of the conflicts, in order
	}{
		{
			name: "resolver",
			setup: func(t *testing.T, ns *testNS) {
				ns.addAddr(t, "hd0", "192.0.2.2/24")
				must(t, ns.nl.RouteAdd(&netlink.Route{Gw: net.ParseIP("192.0.2.1")}))
			},
			resolver: "100.87.255.53",
			desired:  Desired{TunnelIP: netip.MustParsePrefix(supernet)},
			want:     []string{"overlay supernet on oxwhc0 100.87.0.0/16 overlaps 100.87.255.53/32 (resolver "},
		},
		{
			name: "gateway",
			setup: func(t *testing.T, ns *testNS) {
				ns.addAddr(t, "hd0", "192.0.2.2/24")
				l := ns.link(t, "hd0")
				must(t, ns.nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("100.87.9.1"), Flags: int(netlink.FLAG_ONLINK)}))
			},
			resolver: "192.0.2.53",
			desired:  Desired{TunnelIP: netip.MustParsePrefix(supernet)},
			want:     []string{"overlaps 100.87.9.1/32 (gateway dev hd0)"},
		},
		{
			name: "lan and policy table",
			setup: func(t *testing.T, ns *testNS) {
				ns.addAddr(t, "hd0", "100.87.5.2/24")
				l := ns.link(t, "hd0")
				must(t, ns.nl.RouteAdd(&netlink.Route{Gw: net.ParseIP("100.87.5.1")}))
				must(t, ns.nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: mustNet("172.20.0.0/16"), Table: 52}))
			},
			resolver: "100.87.5.53",
			desired: Desired{TunnelIP: netip.MustParsePrefix(supernet), Networks: []Network{
				{ID: "net-hc", Name: "vpn", CIDR: netip.MustParsePrefix("172.20.8.0/24"), Type: TypeLocal},
			}},
			want: []string{"overlay supernet on oxwhc0 100.87.0.0/16 overlaps 100.87.5.0/24 (route dev hd0)",
				"network vpn on ", "overlaps 172.20.0.0/16 (route dev hd0 table 52)"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := newNS(t, "hc")
			hostLink(t, ns)
			c.setup(t, ns)
			resolv := filepath.Join(t.TempDir(), "resolv.conf")
			must(t, os.WriteFile(resolv, []byte("nameserver "+c.resolver+"\n"), 0o644))
			fab, err := New(Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: "oxwhc0", WireGuard: WireGuardUserspace,
				ResolvConf: []string{resolv, filepath.Join(t.TempDir(), "absent")}})
			must(t, err)
			t.Cleanup(func() { fab.Close() })

			before := hostState(t, ns)
			rep, err := fab.Reconcile(context.Background(), c.desired)
			var hc *HostConflictError
			if !errors.Is(err, ErrHostConflict) || !errors.As(err, &hc) {
				t.Fatalf("reconcile: %v, want a host conflict", err)
			}
			if after := hostState(t, ns); after != before {
				t.Fatalf("the host changed:\n--- before\n%s\n--- after\n%s", before, after)
			}
			if rep.Changes != 0 || len(rep.Conflicts) == 0 || len(rep.HostPrefixes) == 0 {
				t.Fatalf("report %+v", rep)
			}
			msg := err.Error()
			at := 0
			for _, w := range c.want {
				i := strings.Index(msg[at:], w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (in order)", msg, w)
				}
				at += i + len(w)
			}
			// Again: still refused, still untouched.
			if _, err := fab.Reconcile(context.Background(), c.desired); !errors.Is(err, ErrHostConflict) {
				t.Fatalf("second reconcile: %v", err)
			}
			if after := hostState(t, ns); after != before {
				t.Fatalf("the host changed on the second reconcile")
			}
		})
	}

	t.Run("clear supernet is applied", func(t *testing.T) {
		ns := newNS(t, "hc")
		hostLink(t, ns)
		ns.addAddr(t, "hd0", "10.1.0.2/16")
		must(t, ns.nl.RouteAdd(&netlink.Route{Gw: net.ParseIP("10.1.0.1")}))
		resolv := filepath.Join(t.TempDir(), "resolv.conf")
		must(t, os.WriteFile(resolv, []byte("nameserver 10.255.255.53\n"), 0o644))
		fab, err := New(Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: "oxwhc1", WireGuard: WireGuardUserspace,
			ResolvConf: []string{resolv}})
		must(t, err)
		t.Cleanup(func() { fab.Close() })
		// The supernet of issue 13 is refused here too...
		if _, err := fab.Reconcile(context.Background(), Desired{TunnelIP: netip.MustParsePrefix("10.240.0.1/12")}); !errors.Is(err, ErrHostConflict) {
			t.Fatalf("10.240.0.0/12 with resolver 10.255.255.53: %v", err)
		}
		// ...the new default is not, and the resolver stays off the mesh.
		rep, err := fab.Reconcile(context.Background(), Desired{TunnelIP: netip.MustParsePrefix(supernet)})
		must(t, err)
		if rep.Changes == 0 || len(rep.Conflicts) != 0 {
			t.Fatalf("report %+v", rep)
		}
		out, err := exec.Command("ip", "-n", ns.name, "route", "get", "10.255.255.53").CombinedOutput()
		if err != nil || strings.Contains(string(out), "oxwhc1") || !strings.Contains(string(out), "dev hd0") {
			t.Fatalf("route to the resolver: %v %s", err, out)
		}
		// Its own interface's route is not the host's: the next reconcile
		// does not refuse it.
		if _, err := fab.Reconcile(context.Background(), Desired{TunnelIP: netip.MustParsePrefix(supernet)}); err != nil {
			t.Fatalf("reconcile again: %v", err)
		}
	})
}

// hostLink gives ns an uplink-like "hd0": a veth whose peer stays in ns, so
// it has a carrier (there may be no dummy module).
func hostLink(t *testing.T, ns *testNS) {
	t.Helper()
	must(t, ns.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hd0"}, PeerName: "hd1"}))
	must(t, ns.nl.LinkSetUp(ns.link(t, "hd0")))
	must(t, ns.nl.LinkSetUp(ns.link(t, "hd1")))
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
