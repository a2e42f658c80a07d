//go:build etcd

package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestCLINamesAcrossOwners runs the case on the real API: a
// developer names a VM like the admin's; the admin's bare name still means
// the admin's own VM, the developer's is dev@example.com/NAME, and the
// admin's tables show owners by email.
func TestCLINamesAcrossOwners(t *testing.T) {
	url := startAPI(t)
	c := newCLI(t, url)
	const image = "https://images.example.com/debian-12.qcow2"
	c.stdin = "developer-password-1\n"
	c.ok("user", "create", "dev@example.com", "--role", "developer", "--password-stdin")
	c.ok("vm", "create", "web-1", "--image", image, "--stopped", "--cpus", "1")

	dev := &cli{t: t, cfg: t.TempDir() + "/config"}
	dev.login(url, "dev@example.com", "developer-password-1")
	dev.ok("vm", "create", "web-1", "--image", image, "--stopped", "--cpus", "2")

	get := func(c *cli, ref string) messages.VM {
		t.Helper()
		var vm messages.VM
		if err := json.Unmarshal([]byte(c.ok("vm", "get", ref, "-o", "json")), &vm); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	if vm := get(c, "web-1"); vm.Spec.CPUs != 1 {
		t.Fatalf("the admin's web-1 is the developer's: %+v", vm.Spec)
	}
	if vm := get(c, "dev@example.com/web-1"); vm.Spec.CPUs != 2 {
		t.Fatalf("dev@example.com/web-1 is not the developer's: %+v", vm.Spec)
	}
	if vm := get(dev, "web-1"); vm.Spec.CPUs != 2 {
		t.Fatalf("the developer's web-1: %+v", vm.Spec)
	}
	dev.fails("[not_found]", "vm", "get", adminEmail+"/web-1")

	out := c.ok("vm", "list", "-o", "wide")
	if !strings.Contains(out, "dev@example.com") || !strings.Contains(out, adminEmail) {
		t.Fatalf("vm list -o wide does not show owners by email:\n%s", out)
	}
	if out := c.ok("vm", "describe", "dev@example.com/web-1"); !strings.Contains(out, "dev@example.com (") {
		t.Fatalf("vm describe does not show the owner's email:\n%s", out)
	}
	if out := dev.ok("vm", "describe", "web-1"); !strings.Contains(out, "dev@example.com (") {
		t.Fatalf("the developer's describe does not show their email:\n%s", out)
	}
}
