//go:build etcd

package gateway_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/otherix/otherix/actors/gateway"
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
