package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"time"

	"github.com/otherix/otherix/nodeagent/netfabric"
)

// reconcileTimes is the reconcile figure of issue #7: one node with 100
// overlay networks and 1,000 FDB entries (10 remote VMs per network, on 10
// remote nodes), reconciled once from nothing, then runs times unchanged.
type reconcileTimes struct {
	first               time.Duration
	firstChanges        int
	p50, max            time.Duration
	runs, changedReruns int
	wireguard           string
}

func timeReconcile(ctx context.Context, rv *reverts, runs int) (reconcileTimes, error) {
	var rt reconcileTimes
	ns, err := newNS(rv, "scale")
	if err != nil {
		return rt, err
	}
	keyDir, err := os.MkdirTemp("", "oxbench-keys")
	if err != nil {
		return rt, err
	}
	rv.push(func() error { return os.RemoveAll(keyDir) })
	fab, err := netfabric.New(netfabric.Options{Netns: ns.path, KeyDir: keyDir, WireGuardIf: fmt.Sprintf("oxb%ds", os.Getpid()%1000000)})
	if err != nil {
		return rt, err
	}
	rv.push(fab.Close)
	d := netfabric.Desired{TunnelIP: netip.MustParsePrefix("10.97.0.1/16")}
	for i := range 10 {
		k, err := genKey()
		if err != nil {
			return rt, err
		}
		remote := netip.AddrFrom4([4]byte{10, 97, 1, byte(i + 2)})
		d.Peers = append(d.Peers, netfabric.Peer{PublicKey: k, Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, 62, byte(i + 2)}), netfabric.DefaultListenPort), TunnelIP: remote})
	}
	for i := range 100 {
		id := fmt.Sprintf("scale-%d", i)
		d.Networks = append(d.Networks, netfabric.Network{ID: id, Name: id, CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24), Type: netfabric.TypeOverlay, VNI: uint32(1000 + i), Egress: i%2 == 0})
		for j := range 10 {
			d.FDB = append(d.FDB, netfabric.FDBEntry{Network: id, MAC: net.HardwareAddr{0x52, 0x54, 0, 1, byte(i), byte(j)}, Remote: d.Peers[j].TunnelIP})
		}
	}
	start := time.Now()
	rep, err := fab.Reconcile(ctx, d)
	if err != nil {
		return rt, fmt.Errorf("first reconcile: %w", err)
	}
	rt.first, rt.firstChanges, rt.wireguard = time.Since(start), rep.Changes, rep.WireGuard
	var times []time.Duration
	for range runs {
		start := time.Now()
		rep, err := fab.Reconcile(ctx, d)
		if err != nil {
			return rt, fmt.Errorf("unchanged reconcile: %w", err)
		}
		times = append(times, time.Since(start))
		if rep.Changes != 0 {
			rt.changedReruns++
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	rt.runs, rt.p50, rt.max = len(times), times[len(times)/2], times[len(times)-1]
	return rt, nil
}
