//go:build etcd

package gateway_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func netVM(g *gateway.Gateway, t *testing.T, name string, nics ...messages.NICSpec) (*messages.VM, *messages.Task, error) {
	return g.CreateVM(t.Context(), owner, messages.CreateVMRequest{Name: name,
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}, Networks: nics}})
}

// TestNetworkLifecycleThroughGateway: a network is created, read by name and
// id, refused deletion while a VM is on it, and deletable once the VM's
// delete task released its address; the released address is reused.
func TestNetworkLifecycleThroughGateway(t *testing.T) {
	g, st := startGateway(t, fastJobs())
	ctx := t.Context()
	n, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue", CIDR: "10.10.0.0/24"})
	if err != nil || n.VNI != 4096 || n.MTU != 1390 || n.Revision == 0 {
		t.Fatalf("create network: %+v %v", n, err)
	}
	if _, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue2", CIDR: "10.10.0.0/16"}); err == nil {
		t.Fatal("overlapping network accepted")
	} else {
		wantCode(t, err, "network_overlap")
	}
	for _, ref := range []string{"blue", n.ID} {
		if got, err := g.GetNetwork(ctx, ref); err != nil || got.ID != n.ID {
			t.Fatalf("get %s: %+v %v", ref, got, err)
		}
	}
	_, err = g.GetNetwork(ctx, "nope")
	wantCode(t, err, "not_found")

	vm, task, err := netVM(g, t, "web", messages.NICSpec{Network: "blue"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vm.Status.NICs) != 1 || vm.Status.NICs[0].IP != "10.10.0.1" || vm.Status.Addresses[0] != "10.10.0.1" {
		t.Fatalf("vm nics: %+v", vm.Status)
	}
	// The same name is still vm_name_conflict, whatever the NICs.
	_, _, err = netVM(g, t, "web", messages.NICSpec{Network: "blue"})
	wantCode(t, err, "vm_name_conflict")
	_, _, err = netVM(g, t, "web2", messages.NICSpec{Network: "blue", IP: "10.10.0.1"})
	wantCode(t, err, "ip_in_use")
	_, _, err = netVM(g, t, "web2", messages.NICSpec{Network: "blue", IP: "10.10.1.1"})
	wantCode(t, err, "invalid_field")

	// The create job fails (no nodes); the allocation survives its status.
	if done := waitTask(t, g, task.ID); done.State != messages.TaskFailed {
		t.Fatalf("create task %s", done.State)
	}
	if got := getVM(t, g, vm.ID); len(got.Status.NICs) != 1 || got.Status.Addresses[0] != "10.10.0.1" {
		t.Fatalf("nics after failed create: %+v", got.Status)
	}
	e := wantCode(t, g.DeleteNetwork(ctx, "blue"), "network_in_use")
	if e.Details["attached_nics"] != int64(1) {
		t.Errorf("details: %v", e.Details)
	}
	_, del, err := g.VMTask(ctx, owner, "web", messages.TaskVMDelete, false)
	if err != nil {
		t.Fatal(err)
	}
	if done := waitTask(t, g, del.ID); done.State != messages.TaskSuccess {
		t.Fatalf("delete task %s %+v", done.State, done.Error)
	}
	if keyExists(t, st, store.UniqKey("ipam", n.ID, "10.10.0.1")) {
		t.Fatal("address still allocated after delete")
	}
	again, task, err := netVM(g, t, "web3", messages.NICSpec{Network: "blue"})
	if err != nil || again.Status.NICs[0].IP != "10.10.0.1" {
		t.Fatalf("reuse: %+v %v", again, err)
	}
	waitTask(t, g, task.ID)
	_, del, err = g.VMTask(ctx, owner, "web3", messages.TaskVMDelete, true)
	if err != nil {
		t.Fatal(err)
	}
	waitTask(t, g, del.ID)
	if err := g.DeleteNetwork(ctx, "blue"); err != nil {
		t.Fatalf("delete emptied network: %v", err)
	}
	if keyExists(t, st, store.UniqKey(store.Networks, "vni", "4096")) || keyExists(t, st, store.UniqKey(store.Networks, "name", "blue")) {
		t.Fatal("network guards left after delete")
	}
}

// TestConcurrentVMCreatesGetDistinctAddresses: 50 VMs created at once on
// one network, each by its own VM actor, get 50 distinct addresses.
func TestConcurrentVMCreatesGetDistinctAddresses(t *testing.T) {
	g, st := startGateway(t, slowJobs())
	if _, err := g.CreateNetwork(t.Context(), messages.CreateNetworkRequest{Name: "busy", CIDR: "10.20.0.0/24", Type: messages.NetworkLocal}); err != nil {
		t.Fatal(err)
	}
	const n = 50
	vms := make([]*messages.VM, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { vms[i], _, errs[i] = netVM(g, t, fmt.Sprintf("vm-%d", i), messages.NICSpec{Network: "busy"}) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		stored, err := st.GetVM(t.Context(), vms[i].ID)
		if err != nil || len(stored.Status.NICs) != 1 {
			t.Fatalf("stored vm %d: %+v %v", i, stored, err)
		}
		ip := stored.Status.NICs[0].IP
		if seen[ip] {
			t.Fatalf("address %s given twice", ip)
		}
		seen[ip] = true
	}
}

// TestUpdateNetworkEgress: egress flips in place on a network a placed VM
// uses, the node's next overlay (once the view is rebuilt) carries it under
// a new revision while an unchanged network keeps the agent's revision, a
// no-op writes nothing, a stale If-Match and a missing network are refused,
// and the change is audited.
func TestUpdateNetworkEgress(t *testing.T) {
	g, st := startNodes(t, testutil.NewClock(time.Now()))
	ctx := t.Context()
	_, cert := enrollNode(t, g, "a")
	blue, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue", CIDR: "10.10.0.0/24", Egress: true})
	if err != nil {
		t.Fatal(err)
	}
	hb := withOverlay("key-a", "192.0.2.1:51820")
	beat(t, g, cert, hb)
	placeVM(t, st, "web", "a", "blue")
	g.ExpireOverlayViewForTest()
	d := beat(t, g, cert, hb)
	if len(d.Networks) != 1 || !d.Networks[0].Egress {
		t.Fatalf("overlay before: %+v", d.Networks)
	}
	hb.OverlayRevision = d.Revision
	g.ExpireOverlayViewForTest()
	if d := beat(t, g, cert, hb); d != nil {
		t.Fatalf("unchanged overlay sent again: %+v", d)
	}

	admin := messages.Principal{UserID: "admin-1", Role: "admin"}
	off := false
	got, err := g.UpdateNetwork(ctx, admin, "blue", store.NetworkPatch{Egress: &off})
	if err != nil || got.Egress || got.Revision <= blue.Revision || got.VNI != blue.VNI || got.CIDR != blue.CIDR ||
		got.MTU != blue.MTU || got.GatewayMAC != blue.GatewayMAC || !got.CreatedAt.Equal(blue.CreatedAt) {
		t.Fatalf("update: %+v %v", got, err)
	}
	if stored, err := st.GetNetwork(ctx, blue.ID); err != nil || stored.Egress || stored.Revision != got.Revision {
		t.Fatalf("stored: %+v %v", stored, err)
	}
	g.ExpireOverlayViewForTest()
	d = beat(t, g, cert, hb)
	if d == nil || d.Revision == hb.OverlayRevision || len(d.Networks) != 1 || d.Networks[0].Egress || d.Networks[0].ID != blue.ID {
		t.Fatalf("overlay after egress off: %+v", d)
	}

	// A no-op by id writes nothing.
	same, err := g.UpdateNetwork(ctx, admin, blue.ID, store.NetworkPatch{Egress: &off})
	if err != nil || same.Revision != got.Revision || same.Egress {
		t.Fatalf("no-op: %+v %v", same, err)
	}
	on := true
	_, err = g.UpdateNetwork(ctx, admin, "blue", store.NetworkPatch{Egress: &on, Revision: blue.Revision})
	if e := wantCode(t, err, "revision_conflict"); e.Details["current_revision"] != got.Revision {
		t.Fatalf("stale If-Match details: %+v", e.Details)
	}
	_, err = g.UpdateNetwork(ctx, admin, "nope", store.NetworkPatch{Egress: &on})
	wantCode(t, err, "not_found")
	if cur, err := g.GetNetwork(ctx, "blue"); err != nil || cur.Egress || cur.Revision != got.Revision {
		t.Fatalf("after refusals: %+v %v", cur, err)
	}

	// Concurrent admins turning egress back on without a revision all
	// succeed: the losers of the compare-and-set re-read and find it done.
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			var n *messages.Network
			n, errs[i] = g.UpdateNetwork(ctx, admin, "blue", store.NetworkPatch{Egress: &on})
			if errs[i] == nil && !n.Egress {
				errs[i] = fmt.Errorf("answered egress off")
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	final, err := g.GetNetwork(ctx, "blue")
	if err != nil || !final.Egress {
		t.Fatalf("final: %+v %v", final, err)
	}

	// Two real changes, two audit entries: no-ops and refusals leave none.
	var updates []messages.AuditEntry
	if !testutil.Until(5*time.Second, 5*time.Millisecond, func() bool {
		entries, _, err := g.ListAudit(ctx, store.Page{Limit: store.MaxPageSize})
		if err != nil {
			return false
		}
		updates = updates[:0]
		for _, e := range entries {
			if e.Action == "network.update" {
				updates = append(updates, e)
			}
		}
		return len(updates) >= 2
	}) {
		t.Fatalf("network.update not audited: %+v", updates)
	}
	for _, e := range updates {
		if e.Actor != "admin-1" || e.Target != "blue" || e.Result != "ok" {
			t.Fatalf("audit entry: %+v", e)
		}
	}
	if len(updates) != 2 {
		t.Fatalf("%d network.update entries, want 2: %+v", len(updates), updates)
	}
}
