//go:build netfabric

package netfabric

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"
)

// TestReconcileScale measures reconcile time for a node with 100 overlay
// networks and 1,000 FDB entries (issue #7's benchmark); it logs the
// figures and asserts only that an unchanged rerun changes nothing.
func TestReconcileScale(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "scale")
	fab, err := New(Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: fmt.Sprintf("oxs%d", time.Now().UnixNano()%1e8)})
	must(t, err)
	t.Cleanup(func() { fab.Close() })
	d := Desired{TunnelIP: netip.MustParsePrefix("10.97.0.1/16")}
	for i := range 100 {
		id := fmt.Sprintf("scale-%d", i)
		d.Networks = append(d.Networks, Network{ID: id, CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24), Type: TypeOverlay, VNI: uint32(1000 + i), Egress: i%2 == 0})
		for j := range 10 {
			d.FDB = append(d.FDB, FDBEntry{Network: id, MAC: net.HardwareAddr{0x52, 0x54, 0, 1, byte(i), byte(j)}, Remote: netip.AddrFrom4([4]byte{10, 97, 1, byte(j + 2)})})
		}
	}
	ctx := context.Background()
	start := time.Now()
	rep, err := fab.Reconcile(ctx, d)
	must(t, err)
	first := time.Since(start)
	var times []time.Duration
	for range 10 {
		start := time.Now()
		rep, err := fab.Reconcile(ctx, d)
		must(t, err)
		times = append(times, time.Since(start))
		if rep.Changes != 0 {
			t.Fatalf("unchanged rerun made %d changes: %v", rep.Changes, rep.Actions[:min(5, len(rep.Actions))])
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("100 overlay networks, 1000 fdb entries (+1000 flood entries): first reconcile %v (%d changes, wireguard %s); unchanged reconcile median %v, max %v",
		first.Round(time.Millisecond), rep.Changes, rep.WireGuard, times[len(times)/2].Round(100*time.Microsecond), times[len(times)-1].Round(100*time.Microsecond))
}

// TestReconcileScaleTaps measures the anti-spoofing guard at 1,000 VM NICs
// (a chain of 11 rules per tap behind one verdict map): the first reconcile,
// an unchanged rerun, a rerun that must list every rule again (a foreign
// table bumped the ruleset generation) and one tap more. It logs the
// figures and asserts only that unchanged reruns change nothing.
func TestReconcileScaleTaps(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "scaletap")
	fab, err := New(Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: fmt.Sprintf("oxs%d", time.Now().UnixNano()%1e8)})
	must(t, err)
	t.Cleanup(func() { fab.Close() })
	var d Desired
	for i := range 4 {
		d.Networks = append(d.Networks, Network{ID: fmt.Sprintf("tapnet-%d", i), CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 101, byte(i), 0}), 24), Type: TypeLocal})
	}
	nic := func(k int) NIC {
		return NIC{VMID: fmt.Sprintf("vm-%d", k), Network: d.Networks[k%4].ID, MAC: net.HardwareAddr{0x52, 0x54, 0, 2, byte(k >> 8), byte(k)},
			IP: netip.AddrFrom4([4]byte{10, 101, byte(k % 4), byte(k/4 + 1)})}
	}
	for k := range 1000 {
		d.NICs = append(d.NICs, nic(k))
	}
	ctx := context.Background()
	timed := func(what string, d Desired, wantChanges bool) {
		t.Helper()
		start := time.Now()
		rep, err := fab.Reconcile(ctx, d)
		must(t, err)
		if !wantChanges && rep.Changes != 0 {
			t.Fatalf("%s made %d changes: %v", what, rep.Changes, rep.Actions[:min(5, len(rep.Actions))])
		}
		t.Logf("1,000 taps, %s: %v (%d changes)", what, time.Since(start).Round(time.Millisecond), rep.Changes)
	}
	timed("first reconcile", d, true)
	timed("unchanged rerun", d, false)
	foreignTable(t, ns)
	timed("rerun after a foreign nftables change (lists every rule)", d, false)
	d.NICs = append(d.NICs, nic(1000))
	timed("one tap more", d, true)
	if got := len(nftComments(t, ns)); got < 1001*11 {
		t.Errorf("%d rules for 1,001 taps", got)
	}
}
