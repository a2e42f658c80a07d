//go:build etcd

package vm_test

import (
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestCreateAllocatesNICs: a create that attaches networks commits the VM
// with an address and MAC per NIC; a static address another VM holds is
// refused and leaves the actor usable; a later command keeps the NICs.
func TestCreateAllocatesNICs(t *testing.T) {
	h := start(t)
	n, err := messages.BuildNetwork(messages.CreateNetworkRequest{Name: "blue", CIDR: "10.10.0.0/24"}, messages.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	n.ID = messages.NewID()
	if err := h.st.CreateNetwork(t.Context(), n, messages.DefaultSettings().VNIRange); err != nil {
		t.Fatal(err)
	}
	spec := func(ip string) messages.VMSpec {
		return messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}, Networks: []messages.NICSpec{{Network: "blue", IP: ip}}}
	}
	id := messages.NewID()
	r := h.ask(id, messages.CreateVM{Owner: "u", Name: "a", Spec: spec("10.10.0.7")})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	nic := r.VM.Status.NICs
	if len(nic) != 1 || nic[0].IP != "10.10.0.7" || nic[0].MAC != messages.NICMAC(id, 0) || nic[0].NetworkID != n.ID || nic[0].MTU != 1390 {
		t.Fatalf("nics: %+v", nic)
	}
	other := messages.NewID()
	if r := h.ask(other, messages.CreateVM{Owner: "u", Name: "b", Spec: spec("10.10.0.7")}); messages.KindOf(r.Err) != messages.KindConflict {
		t.Fatalf("taken static ip: %v", r.Err)
	}
	if r := h.ask(other, messages.CreateVM{Owner: "u", Name: "b", Spec: spec("")}); r.Err != nil || r.VM.Status.NICs[0].IP != "10.10.0.1" {
		t.Fatalf("next free: %+v %v", r.VM, r.Err)
	}
	if r := h.ask(id, messages.CancelVMTask{TaskID: r.Task.ID}); r.Err != nil || len(r.VM.Status.NICs) != 1 {
		t.Fatalf("cancel: %+v %v", r.VM, r.Err)
	}
	if r := h.ask(id, messages.GetVM{}); r.Err != nil || r.VM.Status.Addresses[0] != "10.10.0.7" {
		t.Fatalf("get: %+v %v", r.VM, r.Err)
	}
}
