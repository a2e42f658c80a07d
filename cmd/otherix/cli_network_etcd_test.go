//go:build etcd

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestCLINetworks: network create/list/get/describe/delete, VMs attached
// with --network NAME[:IP] showing their addresses, and kind: Network in
// create -f, apply -f and delete -f.
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

	// Manifests: create, apply (unchanged, then a refused change), delete.
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "net.yaml")
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
	stderr := c.fails("1 of 2 resources failed", "apply", "-f", more)
	if !strings.Contains(stderr, "spec.egress (false→true) cannot change") {
		t.Fatalf("apply change: %s", stderr)
	}
	c.ok("get", "network", "back2")
	if out := c.ok("delete", "-f", more); !strings.Contains(out, "network/front deleted") || !strings.Contains(out, "network/back2 deleted") {
		t.Fatalf("delete -f: %q", out)
	}
	c.fails("[not_found]", "get", "network", "front")
	c.fails("network lab has 1 nic(s) attached", "delete", "network", "lab")
	c.ok("delete", "network", "nope", "--ignore-not-found")
}
