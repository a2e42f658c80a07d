//go:build etcd

package server

import (
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestE2ENetworksAndIPAM runs networks and VM NICs through the real control
// plane, every answer checked against the contract: allocation, a taken
// static address, an exhausted subnet, and a network refused deletion while
// in use.
func TestE2ENetworksAndIPAM(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	n, err := c.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "tiny", CIDR: "10.1.0.0/29"})
	if err != nil || n.VNI == 0 {
		t.Fatalf("create network: %+v %v", n, err)
	}
	_, err = c.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "tiny2", CIDR: "10.1.0.0/28"})
	wantCode(t, err, 409, "network_overlap")
	_, err = c.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "bad", CIDR: "10.2.0.0/31"})
	wantCode(t, err, 400, "invalid_field")

	withNIC := func(name, ip string) messages.CreateVMRequest {
		req := vmRequest(name)
		req.Spec.Networks = []messages.NICSpec{{Network: "tiny", IP: ip}}
		return req
	}
	a, err := c.CreateVM(ctx, withNIC("v0", "10.1.0.6"))
	if err != nil || len(a.VM.Status.NICs) != 1 || a.VM.Status.NICs[0].IP != "10.1.0.6" || a.VM.Status.Addresses[0] != "10.1.0.6" {
		t.Fatalf("static: %+v %v", a, err)
	}
	_, err = c.CreateVM(ctx, withNIC("v1", "10.1.0.6"))
	wantCode(t, err, 409, "ip_in_use")
	_, err = c.CreateVM(ctx, withNIC("v1", "10.1.0.7"))
	wantCode(t, err, 400, "invalid_field")
	for i, want := range []string{"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"} {
		a, err := c.CreateVM(ctx, withNIC("w"+string(rune('a'+i)), ""))
		if err != nil || a.VM.Status.NICs[0].IP != want {
			t.Fatalf("next free %d: %+v %v", i, a, err)
		}
	}
	_, err = c.CreateVM(ctx, withNIC("full", ""))
	wantCode(t, err, 409, "network_exhausted")
	vm, err := c.GetVM(ctx, "v0")
	if err != nil || len(vm.Status.NICs) != 1 || vm.Status.NICs[0].MAC != messages.NICMAC(vm.ID, 0) {
		t.Fatalf("get vm: %+v %v", vm, err)
	}
	err = c.DeleteNetwork(ctx, "tiny")
	wantCode(t, err, 409, "network_in_use")
	if got, err := c.GetNetwork(ctx, n.ID); err != nil || got.Name != "tiny" {
		t.Fatalf("get by id: %+v %v", got, err)
	}
}
