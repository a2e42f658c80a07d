//go:build etcd

package gateway_test

import (
	"crypto/x509"
	"encoding/base64"
	"net/netip"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// wgKey is a well-formed WireGuard public key named after name.
func wgKey(name string) string {
	var k [32]byte
	copy(k[:], name)
	return base64.StdEncoding.EncodeToString(k[:])
}

// withOverlay is a heartbeat that reports a WireGuard key and endpoint.
func withOverlay(key, endpoint string) messages.Heartbeat {
	hb := observed(4)
	hb.Overlay = &messages.NodeOverlay{PublicKey: wgKey(key), Endpoint: endpoint, WireGuard: "userspace", Reconciled: true}
	return hb
}

func beat(t *testing.T, g *gateway.Gateway, cert *x509.Certificate, hb messages.Heartbeat) *messages.DesiredOverlay {
	t.Helper()
	resp, err := g.Heartbeat(t.Context(), cert, hb)
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	return resp.Desired.Overlay
}

// placeVM writes a VM with NICs on nets straight into the store, placed on
// node: the overlay reads placement from the VM's status, whoever wrote it.
func placeVM(t *testing.T, st *store.Store, name, node string, nets ...string) *messages.VM {
	t.Helper()
	now := time.Now().UTC()
	vm := &messages.VM{ID: messages.NewID(), Name: name, Owner: owner, Generation: 1,
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"},
			CPUs: 1, MemoryMiB: 512, DiskGiB: 10, PowerState: messages.PowerRunning},
		Status:    messages.VMStatus{Phase: messages.PhaseRunning, Node: node},
		CreatedAt: now, UpdatedAt: now}
	for _, n := range nets {
		vm.Spec.Networks = append(vm.Spec.Networks, messages.NICSpec{Network: n})
	}
	if err := st.CreateVMWithNICs(t.Context(), vm, nil); err != nil {
		t.Fatalf("create vm %s: %v", name, err)
	}
	return vm
}

// TestOverlayPeersAndTunnelIPs: a node that reports no key gets no overlay
// and no tunnel IP; two nodes that report keys get distinct tunnel IPs of
// the supernet, each the other as its only peer, and the mesh port.
func TestOverlayPeersAndTunnelIPs(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	a, certA := enrollNode(t, g, "a")
	b, certB := enrollNode(t, g, "b")
	_, certC := enrollNode(t, g, "c")

	if d := beat(t, g, certC, observed(4)); d != nil {
		t.Fatalf("node without a key got an overlay: %+v", d)
	}
	if n := nodePhase(t, g, "c"); n.TunnelIP != "" {
		t.Fatalf("node without a key got tunnel ip %s", n.TunnelIP)
	}
	hbA, hbB := withOverlay("key-a", "192.0.2.1:51820"), withOverlay("key-b", "192.0.2.2:51820")
	dA := beat(t, g, certA, hbA)
	dB := beat(t, g, certB, hbB)
	if dA == nil || dB == nil {
		t.Fatalf("overlays: a %+v, b %+v", dA, dB)
	}
	supernet := netip.MustParsePrefix(messages.DefaultSettings().OverlaySupernet)
	ipA, ipB := dA.TunnelIP, dB.TunnelIP
	for _, ip := range []string{ipA, ipB} {
		if a, err := netip.ParseAddr(ip); err != nil || !supernet.Contains(a) {
			t.Fatalf("tunnel ip %q outside %s", ip, supernet)
		}
	}
	if ipA == ipB || dA.ListenPort != messages.WireGuardListenPort {
		t.Fatalf("tunnel ips %s %s, port %d", ipA, ipB, dA.ListenPort)
	}
	for id, ip := range map[string]string{a.ID: ipA, b.ID: ipB} {
		if owner, err := st.TunnelIPOwner(t.Context(), ip); err != nil || owner != id {
			t.Fatalf("guard of %s: %q %v, want %s", ip, owner, err, id)
		}
	}
	// The view was built before b joined: b shows up once it is rebuilt.
	g.ExpireOverlayViewForTest()
	dA, dB = beat(t, g, certA, hbA), beat(t, g, certB, hbB)
	wantA := messages.DesiredPeer{Node: "b", PublicKey: wgKey("key-b"), Endpoint: "192.0.2.2:51820", TunnelIP: ipB}
	wantB := messages.DesiredPeer{Node: "a", PublicKey: wgKey("key-a"), Endpoint: "192.0.2.1:51820", TunnelIP: ipA}
	if len(dA.Peers) != 1 || dA.Peers[0] != wantA || len(dB.Peers) != 1 || dB.Peers[0] != wantB {
		t.Fatalf("peers: a %+v, b %+v", dA.Peers, dB.Peers)
	}
	if dA.TunnelIP != ipA || dB.TunnelIP != ipB {
		t.Fatalf("tunnel ips moved: %s %s, were %s %s", dA.TunnelIP, dB.TunnelIP, ipA, ipB)
	}
	// Recorded: the key and endpoint in the row, the tunnel IP for good.
	row, err := st.GetNode(t.Context(), a.ID)
	if err != nil || row.TunnelIP != ipA || row.Status.Overlay == nil || row.Status.Overlay.PublicKey != wgKey("key-a") ||
		row.Status.Overlay.WireGuard != "userspace" {
		t.Fatalf("row of a: %+v %v", row, err)
	}

	// A failing reconcile is shown, not written on every beat.
	v := rowVersion(t, st, a.ID)
	for _, msg := range []string{"vxlan: permission denied", "wireguard: busy"} {
		hb := withOverlay("key-a", "192.0.2.1:51820")
		hb.Overlay.Reconciled, hb.Overlay.Error = false, msg
		beat(t, g, certA, hb)
		if n := nodePhase(t, g, "a"); n.Status.Overlay.Error != msg || n.Status.Message != "overlay: "+msg {
			t.Fatalf("reconcile error not shown: %+v", n.Status)
		}
	}
	if got := rowVersion(t, st, a.ID); got != v {
		t.Fatalf("reconcile errors wrote the row: version %d, want %d", got, v)
	}
	// A malformed key or endpoint would break every peer's reconcile: refused.
	for _, bad := range []*messages.NodeOverlay{
		{PublicKey: "not-a-key", Endpoint: "192.0.2.1:51820"},
		{PublicKey: wgKey("key-a"), Endpoint: "node-a:51820"},
		{PublicKey: wgKey("key-a"), Endpoint: "192.0.2.1:0"},
		{PublicKey: wgKey("key-a"), Endpoint: "192.0.2.1:51820", WireGuard: "ebpf"},
	} {
		hb := observed(4)
		hb.Overlay = bad
		_, err := g.Heartbeat(t.Context(), certA, hb)
		wantCode(t, err, "invalid_field")
	}
	// A new key is written, and keeps the tunnel IP.
	beat(t, g, certA, withOverlay("key-a2", "192.0.2.1:51820"))
	if row, _ := st.GetNode(t.Context(), a.ID); row.Status.Overlay.PublicKey != wgKey("key-a2") || row.TunnelIP != ipA {
		t.Fatalf("rotated key: %+v", row)
	}
}

// TestOverlayNetworksAndFDB: a VM on an overlay network placed on node a
// puts the network on a, and its MAC → a's tunnel IP in the FDB of b once b
// has a NIC on that network too; a local network never has FDB entries;
// a's own NICs are never in its own FDB.
func TestOverlayNetworksAndFDB(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	_, certA := enrollNode(t, g, "a")
	_, certB := enrollNode(t, g, "b")
	blue, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue", CIDR: "10.10.0.0/24", Egress: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "lan", CIDR: "10.20.0.0/24", Type: messages.NetworkLocal}); err != nil {
		t.Fatal(err)
	}
	hbA, hbB := withOverlay("key-a", "192.0.2.1:51820"), withOverlay("key-b", "192.0.2.2:51820")
	ipA := beat(t, g, certA, hbA).TunnelIP
	beat(t, g, certB, hbB)

	web := placeVM(t, st, "web", "a", "blue", "lan")
	db := placeVM(t, st, "db", "b", "blue")
	lanB := placeVM(t, st, "cache", "b", "lan")
	placeVM(t, st, "nowhere", "", "blue") // not placed: no FDB entry anywhere
	g.ExpireOverlayViewForTest()
	dA, dB := beat(t, g, certA, hbA), beat(t, g, certB, hbB)

	names := func(ns []messages.DesiredNetwork) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return out
	}
	if got := names(dA.Networks); len(got) != 2 || got[0] != "blue" || got[1] != "lan" {
		t.Fatalf("networks of a: %v", got)
	}
	if n := dA.Networks[0]; n.ID != blue.ID || n.VNI != blue.VNI || n.CIDR != "10.10.0.0/24" || !n.Egress ||
		n.MTU != blue.MTU || n.GatewayMAC != blue.GatewayMAC || n.Type != messages.NetworkOverlay {
		t.Fatalf("network blue on a: %+v, want %+v", n, blue)
	}
	wantB := []messages.DesiredFDBEntry{{Network: blue.ID, MAC: web.Status.NICs[0].MAC, Remote: ipA}}
	if len(dB.FDB) != 1 || dB.FDB[0] != wantB[0] {
		t.Fatalf("fdb of b: %+v, want %+v", dB.FDB, wantB)
	}
	if len(dA.FDB) != 1 || dA.FDB[0].MAC != db.Status.NICs[0].MAC || dA.FDB[0].Remote != dB.TunnelIP {
		t.Fatalf("fdb of a: %+v", dA.FDB)
	}
	for _, e := range append(dA.FDB, dB.FDB...) {
		if e.MAC == lanB.Status.NICs[0].MAC || e.MAC == web.Status.NICs[1].MAC {
			t.Fatalf("local network nic in the fdb: %+v", e)
		}
	}
	if got := names(dB.Networks); len(got) != 2 || got[0] != "blue" || got[1] != "lan" {
		t.Fatalf("networks of b: %v", got)
	}

	// A silent peer stays in the mesh while unreachable, and leaves when gone.
	clock.Add(4 * time.Minute)
	beat(t, g, certA, hbA)
	if err := g.CheckNodesForTest(ctx); err != nil {
		t.Fatal(err)
	}
	if n := nodePhase(t, g, "b"); n.Phase != messages.NodeUnreachable {
		t.Fatalf("b is %s", n.Phase)
	}
	g.ExpireOverlayViewForTest()
	if dA = beat(t, g, certA, hbA); len(dA.Peers) != 1 || len(dA.FDB) != 1 {
		t.Fatalf("unreachable b left the mesh: %+v", dA)
	}
	clock.Add(10 * time.Minute)
	beat(t, g, certA, hbA)
	if err := g.CheckNodesForTest(ctx); err != nil {
		t.Fatal(err)
	}
	g.ExpireOverlayViewForTest()
	if dA = beat(t, g, certA, hbA); len(dA.Peers) != 0 || len(dA.FDB) != 0 {
		t.Fatalf("gone b still in the mesh: %+v", dA)
	}
}

// TestDeleteNodeFreesTunnelIP: deleting a node frees its tunnel IP, and the
// next node to join takes it.
func TestDeleteNodeFreesTunnelIP(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	_, certA := enrollNode(t, g, "a")
	ip := beat(t, g, certA, withOverlay("key-a", "192.0.2.1:51820")).TunnelIP
	if err := g.DeleteNode(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.TunnelIPOwner(ctx, ip); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("tunnel ip %s still held: %v", ip, err)
	}
	b, certB := enrollNode(t, g, "b")
	if got := beat(t, g, certB, withOverlay("key-b", "192.0.2.2:51820")).TunnelIP; got != ip {
		t.Fatalf("freed tunnel ip %s not reused: %s", ip, got)
	}
	if owner, err := st.TunnelIPOwner(ctx, ip); err != nil || owner != b.ID {
		t.Fatalf("guard: %q %v", owner, err)
	}
}

// TestOverlayRevisionSkipsUnchanged: a heartbeat that names the revision it
// holds gets the revision back without the overlay; a placement elsewhere
// changes the revision and the whole overlay comes again; a stale or empty
// revision always gets it whole.
func TestOverlayRevisionSkipsUnchanged(t *testing.T) {
	g, st := startNodes(t, testutil.NewClock(time.Now()))
	ctx := t.Context()
	_, certA := enrollNode(t, g, "a")
	_, certB := enrollNode(t, g, "b")
	if _, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue", CIDR: "10.10.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	hbA, hbB := withOverlay("key-a", "192.0.2.1:51820"), withOverlay("key-b", "192.0.2.2:51820")
	beat(t, g, certA, hbA)
	beat(t, g, certB, hbB)
	placeVM(t, st, "web", "a", "blue")
	g.ExpireOverlayViewForTest()

	answer := func(hb messages.Heartbeat) messages.DesiredState {
		t.Helper()
		resp, err := g.Heartbeat(ctx, certA, hb)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Desired
	}
	first := answer(hbA)
	if first.Overlay == nil || first.Overlay.Revision == "" || first.OverlayRevision != first.Overlay.Revision {
		t.Fatalf("first answer: %+v", first)
	}
	held := hbA
	held.OverlayRevision = first.OverlayRevision
	if again := answer(held); again.Overlay != nil || again.OverlayRevision != first.OverlayRevision {
		t.Fatalf("unchanged overlay sent again: %+v", again)
	}
	// A rebuilt view with the same content keeps the revision.
	g.ExpireOverlayViewForTest()
	if again := answer(held); again.Overlay != nil || again.OverlayRevision != first.OverlayRevision {
		t.Fatalf("after a rebuild of the same content: %+v", again)
	}
	stale := hbA
	stale.OverlayRevision = "0123456789abcdef0123456789abcdef"
	if got := answer(stale); got.Overlay == nil || got.Overlay.Revision != first.OverlayRevision {
		t.Fatalf("a stale revision did not get the overlay: %+v", got)
	}

	// b gets a NIC on blue: a's FDB gains it, so a's revision changes.
	placeVM(t, st, "db", "b", "blue")
	g.ExpireOverlayViewForTest()
	changed := answer(held)
	if changed.Overlay == nil || changed.OverlayRevision == first.OverlayRevision || len(changed.Overlay.FDB) != 1 {
		t.Fatalf("after a placement on b: %+v", changed)
	}
}
