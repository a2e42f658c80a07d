//go:build etcd

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestCLINetworks: network create/list/get/describe/update/delete, VMs
// attached with --network NAME[:IP] showing their addresses, and kind:
// Network in create -f, apply -f (egress changed in place) and delete -f.
func TestCLINetworks(t *testing.T) {
	c := newCLI(t, startAPI(t))

	out := c.ok("network", "create", "backend", "--cidr", "10.10.0.0/24", "--egress")
	if out != "network/backend created (10.10.0.0/24, overlay)\n" {
		t.Fatalf("create printed %q", out)
	}
	var n messages.Network
	if err := json.Unmarshal([]byte(c.ok("network", "get", "backend", "-o", "json")), &n); err != nil ||
		n.VNI != 4096 || n.MTU != 1390 || !n.Egress || n.Gateway != "169.254.1.1" {
		t.Fatalf("get -o json: %+v %v", n, err)
	}
	c.ok("network", "create", "lab", "--cidr", "192.168.50.0/24", "--type", "local", "--mtu", "1400")
	out = c.ok("network", "list")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "backend") || !strings.Contains(out, "192.168.50.0/24") || !strings.Contains(out, "local") {
		t.Fatalf("list: %s", out)
	}
	if out := c.ok("get", "networks", "-o", "wide"); !strings.Contains(out, "GATEWAY MAC") || !strings.Contains(out, n.GatewayMAC) {
		t.Fatalf("get networks -o wide: %s", out)
	}
	if out := c.ok("describe", "network", "backend"); !strings.Contains(out, "VNI:") || !strings.Contains(out, "4096") {
		t.Fatalf("describe: %s", out)
	}
	if out := c.ok("network", "get", "lab", "-o", "yaml"); !strings.Contains(out, "mtu: 1400") {
		t.Fatalf("get -o yaml: %s", out)
	}
	c.usage("has host bits set", "network", "create", "x", "--cidr", "10.20.0.1/24")
	c.usage("--cidr is required", "network", "create", "x")
	c.fails("[network_overlap]", "network", "create", "x", "--cidr", "10.10.0.0/16")
	c.fails("[network_name_conflict]", "network", "create", "backend", "--cidr", "10.30.0.0/24")

	// VMs with NICs: a static address and the next free one.
	c.ok("vm", "create", "w1", "--image", image, "--network", "backend:10.10.0.10", "--network", "lab", "--stopped")
	c.ok("vm", "create", "w2", "--image", image, "--network", "backend", "--stopped")
	c.fails("[ip_in_use]", "vm", "create", "w3", "--image", image, "--network", "backend:10.10.0.10")
	c.fails("[invalid_field]", "vm", "create", "w3", "--image", image, "--network", "nowhere")
	if out := c.ok("vm", "get", "w1", "-o", "wide"); !strings.Contains(out, "10.10.0.10,192.168.50.1") {
		t.Fatalf("vm get -o wide: %s", out)
	}
	var vm messages.VM
	if err := json.Unmarshal([]byte(c.ok("vm", "get", "w2", "-o", "json")), &vm); err != nil ||
		len(vm.Status.NICs) != 1 || vm.Status.NICs[0].IP != "10.10.0.1" || vm.Status.NICs[0].MAC[:3] != "02:" {
		t.Fatalf("vm nics: %+v %v", vm.Status, err)
	}
	if out := c.ok("describe", "vm", "w1"); !strings.Contains(out, "nic0:") || !strings.Contains(out, "backend 10.10.0.10/24") {
		t.Fatalf("describe vm: %s", out)
	}
	c.fails("[network_in_use]", "network", "delete", "backend")

	// Egress flips in place while VMs are attached; nothing else moves.
	if out := c.ok("network", "update", "backend", "--egress=false"); out != "network/backend configured (egress true→false)\n" {
		t.Fatalf("update: %q", out)
	}
	if out := c.ok("network", "update", "backend", "--egress=false"); out != "network/backend unchanged (egress false)\n" {
		t.Fatalf("update again: %q", out)
	}
	var upd messages.Network
	if err := json.Unmarshal([]byte(c.ok("network", "update", "backend", "--egress=true", "-o", "json")), &upd); err != nil ||
		!upd.Egress || upd.ID != n.ID || upd.CIDR != n.CIDR || upd.VNI != n.VNI || upd.MTU != n.MTU || upd.Revision <= n.Revision {
		t.Fatalf("update -o json: %+v %v", upd, err)
	}
	if err := json.Unmarshal([]byte(c.ok("network", "get", "backend", "-o", "json")), &upd); err != nil || !upd.Egress {
		t.Fatalf("get after update: %+v %v", upd, err)
	}
	c.usage("--egress=true or --egress=false is required", "network", "update", "backend")
	c.usage("invalid argument", "network", "update", "backend", "--egress=maybe")
	c.usage("needs a network name", "network", "update", "--egress=true")
	c.fails("[not_found]", "network", "update", "nope", "--egress=true")

	// Manifests: create, apply (unchanged, egress changed in place, refused
	// changes of the rest), delete.
	dir := t.TempDir()
	files := 0
	write := func(body string) string {
		files++
		p := filepath.Join(dir, fmt.Sprintf("net-%d.yaml", files))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	manifest := write("kind: Network\nmetadata: {name: front}\nspec: {cidr: 10.40.0.0/24, type: local}\n")
	if out := c.ok("create", "-f", manifest); out != "network/front created (10.40.0.0/24, local)\n" {
		t.Fatalf("create -f: %q", out)
	}
	if out := c.ok("apply", "-f", manifest); out != "network/front unchanged\n" {
		t.Fatalf("apply unchanged: %q", out)
	}
	more := write("kind: Network\nmetadata: {name: front}\nspec: {cidr: 10.40.0.0/24, type: local, egress: true}\n" +
		"---\nkind: Network\nmetadata: {name: back2}\nspec: {cidr: 10.50.0.0/24}\n")
	if out := c.ok("apply", "-f", more); out != "network/front configured (egress false→true)\nnetwork/back2 created\n" {
		t.Fatalf("apply egress: %q", out)
	}
	if out := c.ok("apply", "-f", more); out != "network/front unchanged\nnetwork/back2 unchanged\n" {
		t.Fatalf("apply again: %q", out)
	}
	var front messages.Network
	if err := json.Unmarshal([]byte(c.ok("get", "network", "front", "-o", "json")), &front); err != nil || !front.Egress ||
		front.Type != messages.NetworkLocal {
		t.Fatalf("front after apply: %+v %v", front, err)
	}
	// Leaving egress out means false, as at creation.
	var rep struct {
		Items []applied `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("apply", "-f", manifest, "-o", "json")), &rep); err != nil || len(rep.Items) != 1 ||
		rep.Items[0].Action != "configured" || len(rep.Items[0].Changes) != 1 || rep.Items[0].Changes[0] != "egress true→false" ||
		rep.Items[0].Network == nil || rep.Items[0].Network.Egress {
		t.Fatalf("apply -o json: %+v %v", rep, err)
	}
	// A cidr, type or mtu change is refused, and the egress asked with it
	// is not applied either.
	refused := write("kind: Network\nmetadata: {name: front}\nspec: {cidr: 10.41.0.0/24, type: overlay, egress: true, mtu: 1300}\n")
	stderr := c.fails("1 of 1 resources failed", "apply", "-f", refused)
	if !strings.Contains(stderr, "spec.cidr (10.40.0.0/24→10.41.0.0/24), spec.type (local→overlay), spec.mtu (1500→1300) cannot change") ||
		strings.Contains(stderr, "egress") {
		t.Fatalf("apply refused change: %s", stderr)
	}
	if err := json.Unmarshal([]byte(c.ok("get", "network", "front", "-o", "json")), &front); err != nil || front.Egress {
		t.Fatalf("front after a refused apply: %+v %v", front, err)
	}
	c.ok("get", "network", "back2")
	if out := c.ok("delete", "-f", more); !strings.Contains(out, "network/front deleted") || !strings.Contains(out, "network/back2 deleted") {
		t.Fatalf("delete -f: %q", out)
	}
	c.fails("[not_found]", "get", "network", "front")
	c.fails("network lab has 1 nic(s) attached", "delete", "network", "lab")
	c.ok("delete", "network", "nope", "--ignore-not-found")
}
