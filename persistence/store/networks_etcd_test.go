//go:build etcd

package store_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func code(err error) string {
	var e *messages.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return "not a domain error: " + err.Error()
}

func newNetwork(t *testing.T, s *store.Store, name, cidr, typ string) (*messages.Network, error) {
	t.Helper()
	n, err := messages.BuildNetwork(messages.CreateNetworkRequest{Name: name, CIDR: cidr, Type: typ}, messages.DefaultSettings())
	if err != nil {
		return nil, err
	}
	n.ID = messages.NewID()
	n.GatewayMAC = messages.GatewayMAC(n.ID)
	n.CreatedAt = time.Now().UTC()
	return n, s.CreateNetwork(t.Context(), n, messages.DefaultSettings().VNIRange)
}

func mustNetwork(t *testing.T, s *store.Store, name, cidr, typ string) *messages.Network {
	t.Helper()
	n, err := newNetwork(t, s, name, cidr, typ)
	if err != nil {
		t.Fatalf("create network %s: %v", name, err)
	}
	return n
}

// TestNetworkCreateGuards: name uniqueness, overlap, VNIs distinct and only
// for overlay networks, VNI exhaustion.
func TestNetworkCreateGuards(t *testing.T) {
	s := startStore(t)
	a := mustNetwork(t, s, "a", "10.10.0.0/24", messages.NetworkOverlay)
	b := mustNetwork(t, s, "b", "10.20.0.0/16", messages.NetworkOverlay)
	l := mustNetwork(t, s, "l", "192.168.5.0/24", messages.NetworkLocal)
	if a.VNI != 4096 || b.VNI != 4097 || l.VNI != 0 {
		t.Fatalf("vnis: %d %d %d", a.VNI, b.VNI, l.VNI)
	}
	if _, err := newNetwork(t, s, "a", "10.30.0.0/24", ""); code(err) != "network_name_conflict" {
		t.Fatalf("duplicate name: %v", err)
	}
	for _, cidr := range []string{"10.10.0.128/25", "10.0.0.0/8", "10.20.5.0/24"} {
		if _, err := newNetwork(t, s, "x", cidr, ""); code(err) != "network_overlap" {
			t.Fatalf("overlap %s: %v", cidr, err)
		}
	}
	got, err := s.GetNetworkByName(t.Context(), "b")
	if err != nil || got.ID != b.ID || got.CIDR != "10.20.0.0/16" || got.Revision == 0 {
		t.Fatalf("get by name: %+v %v", got, err)
	}
	list, _, err := s.ListNetworks(t.Context(), store.Page{})
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %d %v", len(list), err)
	}
	// Deleting a frees its VNI for the next overlay network.
	if err := s.DeleteNetwork(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	c := mustNetwork(t, s, "c", "10.10.0.0/24", "")
	if c.VNI != 4096 {
		t.Fatalf("vni after delete: %d", c.VNI)
	}
	n, _ := messages.BuildNetwork(messages.CreateNetworkRequest{Name: "d", CIDR: "10.40.0.0/24"}, messages.DefaultSettings())
	n.ID = messages.NewID()
	if err := s.CreateNetwork(t.Context(), n, messages.VNIRange{Min: 4096, Max: 4097}); code(err) != "vni_exhausted" {
		t.Fatalf("vni exhausted: %v", err)
	}
}

// TestNetworkConcurrentOverlap: of concurrent creates with overlapping
// CIDRs exactly one wins; of concurrent disjoint ones each gets its own VNI.
func TestNetworkConcurrentOverlap(t *testing.T) {
	s := startStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 10)
	nets := make([]*messages.Network, 10)
	for i := range 10 {
		wg.Go(func() {
			nets[i], errs[i] = newNetwork(t, s, fmt.Sprintf("o%d", i), "10.50.0.0/24", "")
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch code(err) {
		case "":
			won++
		case "network_overlap":
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d overlapping creates won", won)
	}
	vnis := map[int]bool{}
	for i := range 10 {
		wg.Go(func() {
			nets[i], errs[i] = newNetwork(t, s, fmt.Sprintf("d%d", i), fmt.Sprintf("10.60.%d.0/24", i), "")
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		if vnis[nets[i].VNI] {
			t.Fatalf("vni %d allocated twice", nets[i].VNI)
		}
		vnis[nets[i].VNI] = true
	}
}

func nicVM(name string, nics ...messages.NICSpec) *messages.VM {
	now := time.Now().UTC()
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}, Networks: nics}
	spec.Defaults()
	return &messages.VM{ID: messages.NewID(), Name: name, Owner: "u1", Generation: 1, Spec: spec,
		Status: messages.VMStatus{Phase: messages.PhasePending}, CreatedAt: now, UpdatedAt: now}
}

// TestIPAM: static, next-free, taken, outside, exhausted, release on delete
// and reuse, a network in use refused deletion, a missing network.
func TestIPAM(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	n := mustNetwork(t, s, "small", "10.70.0.0/29", "") // hosts .1–.6
	other := mustNetwork(t, s, "other", "10.80.0.0/24", messages.NetworkLocal)

	first := nicVM("v0", messages.NICSpec{Network: "small"}, messages.NICSpec{Network: "other", IP: "10.80.0.200"})
	if err := s.CreateVMWithNICs(ctx, first, nil); err != nil {
		t.Fatal(err)
	}
	st := first.Status
	if len(st.NICs) != 2 || st.NICs[0].IP != "10.70.0.1" || st.NICs[1].IP != "10.80.0.200" ||
		st.NICs[0].PrefixLen != 29 || st.NICs[0].MAC != messages.NICMAC(first.ID, 0) || st.NICs[1].MTU != 1500 ||
		st.NICs[0].NetworkID != n.ID || st.NICs[1].Network != "other" ||
		len(st.Addresses) != 2 || st.Addresses[0] != "10.70.0.1" {
		t.Fatalf("status: %+v", st)
	}
	stored, err := s.GetVM(ctx, first.ID)
	if err != nil || len(stored.Status.NICs) != 2 {
		t.Fatalf("stored nics: %+v %v", stored, err)
	}
	for _, tc := range []struct {
		ip, code string
	}{
		{"10.70.0.1", "ip_in_use"},
		{"10.70.0.0", "invalid_field"}, // network address
		{"10.70.0.7", "invalid_field"}, // broadcast
		{"10.71.0.2", "invalid_field"}, // outside
	} {
		if err := s.CreateVMWithNICs(ctx, nicVM("s", messages.NICSpec{Network: "small", IP: tc.ip}), nil); code(err) != tc.code {
			t.Fatalf("static %s: %v, want %s", tc.ip, err, tc.code)
		}
	}
	if err := s.CreateVMWithNICs(ctx, nicVM("s", messages.NICSpec{Network: "nope"}), nil); code(err) != "invalid_field" {
		t.Fatalf("missing network: %v", err)
	}
	// A refused create leaves nothing behind: the name is free.
	if err := s.CreateVMWithNICs(ctx, nicVM("s", messages.NICSpec{Network: "small", IP: "10.70.0.6"}), nil); err != nil {
		t.Fatal(err)
	}
	var vms []*messages.VM
	for i := range 4 { // .2 .3 .4 .5
		vm := nicVM(fmt.Sprintf("f%d", i), messages.NICSpec{Network: "small"})
		if err := s.CreateVMWithNICs(ctx, vm, nil); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("10.70.0.%d", i+2); vm.Status.NICs[0].IP != want {
			t.Fatalf("next free = %s, want %s", vm.Status.NICs[0].IP, want)
		}
		vms = append(vms, vm)
	}
	err = s.CreateVMWithNICs(ctx, nicVM("full", messages.NICSpec{Network: "small"}), nil)
	if code(err) != "network_exhausted" {
		t.Fatalf("exhausted: %v", err)
	}
	if err := s.DeleteNetwork(ctx, n); code(err) != "network_in_use" {
		t.Fatalf("delete in use: %v", err)
	}
	if c, err := s.NetworkAttachments(ctx, n.ID); err != nil || c != 6 {
		t.Fatalf("attachments %d %v", c, err)
	}
	// Delete the VM holding .3: its address is free, and taken next.
	if err := s.Commit(ctx, store.DeleteVM(store.NewTxn(), vms[1])); err != nil {
		t.Fatal(err)
	}
	again := nicVM("again", messages.NICSpec{Network: "small"})
	if err := s.CreateVMWithNICs(ctx, again, nil); err != nil || again.Status.NICs[0].IP != "10.70.0.3" {
		t.Fatalf("reuse: %+v %v", again.Status, err)
	}
	// Empty the network; then it can go, and the other still has its VM.
	first, _ = s.GetVM(ctx, first.ID)
	for _, id := range []string{first.ID, vms[0].ID, vms[2].ID, vms[3].ID, again.ID} {
		vm, err := s.GetVM(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, store.DeleteVM(store.NewTxn(), vm)); err != nil {
			t.Fatal(err)
		}
	}
	sid, err := s.VMIDByName(ctx, "u1", "s")
	if err != nil {
		t.Fatal(err)
	}
	svm, _ := s.GetVM(ctx, sid)
	if err := s.Commit(ctx, store.DeleteVM(store.NewTxn(), svm)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNetwork(ctx, n); err != nil {
		t.Fatalf("delete emptied network: %v", err)
	}
	if err := s.DeleteNetwork(ctx, other); err != nil {
		t.Fatalf("delete other: %v", err)
	}
	// A VM asking for a deleted network is refused.
	if err := s.CreateVMWithNICs(ctx, nicVM("late", messages.NICSpec{Network: "small"}), nil); code(err) != "invalid_field" {
		t.Fatalf("deleted network: %v", err)
	}
}

// TestIPAMConcurrent: 50 concurrent creates on one network get 50 distinct
// addresses.
func TestIPAMConcurrent(t *testing.T) {
	s := startStore(t)
	mustNetwork(t, s, "busy", "10.90.0.0/24", "")
	const n = 50
	vms := make([]*messages.VM, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		vms[i] = nicVM(fmt.Sprintf("c%d", i), messages.NICSpec{Network: "busy"})
		wg.Go(func() { errs[i] = s.CreateVMWithNICs(t.Context(), vms[i], nil) })
	}
	wg.Wait()
	seen := map[string]string{}
	macs := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		ip := vms[i].Status.NICs[0].IP
		if prev, dup := seen[ip]; dup {
			t.Fatalf("%s given to %s and %s", ip, prev, vms[i].Name)
		}
		seen[ip] = vms[i].Name
		macs[vms[i].Status.NICs[0].MAC] = true
	}
	if len(seen) != n || len(macs) != n {
		t.Fatalf("%d distinct addresses, %d macs", len(seen), len(macs))
	}
}

// TestNetworkUpdate: egress changes in place guarded by the row's revision
// (a stale writer is revision_conflict, a deleted row not_found), the guards
// and VNI stay, and a VM created while the network changes under it retries
// its allocation instead of failing.
func TestNetworkUpdate(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	n := mustNetwork(t, s, "edge", "10.60.0.0/24", "")
	read := *n
	on := true
	if !(store.NetworkPatch{Egress: &on}).Apply(n) || (store.NetworkPatch{Egress: &on}).Apply(n) || (store.NetworkPatch{}).Apply(n) {
		t.Fatal("apply: a change must report true once, a no-op false")
	}
	if err := s.UpdateNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n.Revision <= read.Revision {
		t.Fatalf("revision %d after update from %d", n.Revision, read.Revision)
	}
	got, err := s.GetNetworkByName(ctx, "edge")
	if err != nil || !got.Egress || got.Revision != n.Revision || got.VNI != read.VNI || got.CIDR != read.CIDR ||
		got.MTU != read.MTU || got.GatewayMAC != read.GatewayMAC {
		t.Fatalf("after update: %+v %v", got, err)
	}
	// The copy read before the update is stale.
	if err := s.UpdateNetwork(ctx, &read); code(err) != "revision_conflict" {
		t.Fatalf("stale update: %v", err)
	}

	// A network updated between a VM's reads and its commit: the create
	// starts over and lands.
	flipped := false
	vm := nicVM("racer", messages.NICSpec{Network: "edge"})
	err = s.CreateVMWithNICs(ctx, vm, func(*store.Txn) {
		if flipped {
			return
		}
		flipped = true
		cur, err := s.GetNetworkByName(ctx, "edge")
		if err != nil {
			t.Errorf("read: %v", err)
			return
		}
		cur.Egress = !cur.Egress
		if err := s.UpdateNetwork(ctx, cur); err != nil {
			t.Errorf("concurrent update: %v", err)
		}
	})
	// The retry may pick any of the lowest few free addresses.
	if err != nil || !flipped || len(vm.Status.NICs) != 1 || !strings.HasPrefix(vm.Status.NICs[0].IP, "10.60.0.") {
		t.Fatalf("create during an update: %+v %v", vm.Status, err)
	}

	cur, err := s.GetNetworkByName(ctx, "edge")
	if err != nil {
		t.Fatal(err)
	}
	gone := mustNetwork(t, s, "gone", "10.61.0.0/24", "")
	if err := s.DeleteNetwork(ctx, gone); err != nil {
		t.Fatal(err)
	}
	gone.Egress = true
	if err := s.UpdateNetwork(ctx, gone); code(err) != "not_found" {
		t.Fatalf("update of a deleted network: %v", err)
	}
	if _, err := s.LookupUnique(ctx, store.Networks, "name", "edge"); err != nil || cur.VNI != read.VNI {
		t.Fatalf("name guard after updates: %v (vni %d)", err, cur.VNI)
	}
}
