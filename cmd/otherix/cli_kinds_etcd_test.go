//go:build etcd

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// usage runs a command that must be refused as a usage error (exit 2)
// mentioning want.
func (c *cli) usage(want string, args ...string) {
	c.t.Helper()
	code, stdout, stderr := c.run(args...)
	if code != exitUsage || !strings.Contains(stderr, want) {
		c.t.Fatalf("otherix %s: exit %d, want %d with %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, exitUsage, want, stdout, stderr)
	}
}

// TestCLIKindVerbs: create with human units, then get, describe and delete
// by kind, as kubectl users type them.
func TestCLIKindVerbs(t *testing.T) {
	c := newCLI(t, startAPI(t))

	var acc client.Accepted
	out := c.ok("vm", "create", "k1", "--image", image, "--memory", "1Gi", "--disk", "20Gi", "--arch", "arm64", "--cpus", "2", "--stopped", "-o", "json")
	if err := json.Unmarshal([]byte(out), &acc); err != nil || acc.Task == nil || acc.Task.Kind != messages.TaskVMCreate {
		t.Fatalf("create -o json: %s (%v)", out, err)
	}
	var vm messages.VM
	if err := json.Unmarshal([]byte(c.ok("get", "vm", "k1", "-o", "json")), &vm); err != nil ||
		vm.Spec.MemoryMiB != 1024 || vm.Spec.DiskGiB != 20 || vm.Spec.Arch != messages.ArchARM64 || vm.Spec.CPUs != 2 {
		t.Fatalf("get vm -o json: %+v %v", vm.Spec, err)
	}
	for _, args := range [][]string{{"get", "vms"}, {"get", "VM", "k1"}, {"get", "vm/k1"}, {"get", "vm", vm.ID}} {
		if out := c.ok(args...); !strings.Contains(out, "NAME") || !strings.Contains(out, "k1") {
			t.Fatalf("%v: %s", args, out)
		}
	}
	if out := c.ok("get", "vm", "k1", "-o", "wide"); !strings.Contains(out, "ADDRESSES") || !strings.Contains(out, "arm64") {
		t.Fatalf("get -o wide: %s", out)
	}
	if out := c.ok("describe", "vm", "k1"); !strings.Contains(out, "Arch:") || !strings.Contains(out, "arm64") || !strings.Contains(out, "Memory:") {
		t.Fatalf("describe vm: %s", out)
	}
	if out := c.ok("get", "tasks"); !strings.Contains(out, acc.Task.ID) {
		t.Fatalf("get tasks: %s", out)
	}
	if out := c.ok("describe", "task", acc.Task.ID); !strings.Contains(out, "Kind:") || !strings.Contains(out, "vm.create") {
		t.Fatalf("describe task: %s", out)
	}
	if out := c.ok("get", "task", acc.Task.ID, "-o", "yaml"); !strings.Contains(out, "kind: vm.create") {
		t.Fatalf("get task -o yaml: %s", out)
	}
	if out := c.ok("get", "nodes"); !strings.Contains(out, "NAME") {
		t.Fatalf("get nodes: %s", out)
	}
	c.fails("[not_found]", "get", "node", "nope")
	c.fails("[not_found]", "describe", "vm", "nope")
	c.usage(`unknown kind "pods"`, "get", "pods")
	c.usage("tasks cannot be deleted", "delete", "task", acc.Task.ID)

	c.settle()
	// Without a node nothing runs: the synchronous verbs say so, and the
	// power tasks end the way a never-placed VM allows.
	c.fails("[vm_not_running]", "vm", "pause", "k1")
	c.fails("[vm_not_running]", "vm", "resume", "k1")
	c.fails("[vm_not_running]", "vm", "logs", "k1", "--tail", "100")
	c.ok("vm", "stop", "k1", "--timeout", "2m", "--wait")
	c.ok("vm", "poweroff", "k1", "--wait")
	c.fails("[vm_not_running]", "vm", "reboot", "k1", "--force", "--wait")
	c.settle()
	if out := c.ok("delete", "vm", "k1", "--wait"); !strings.Contains(out, "vm.delete") {
		t.Fatalf("delete vm: %s", out)
	}
	c.fails("[not_found]", "get", "vm", "k1")
	c.fails("[not_found]", "delete", "vm", "k1")
	c.ok("delete", "vm", "k1", "--ignore-not-found")
	c.fails("[not_found]", "delete", "node", "nope")
}

// TestCLIApply: apply creates what is missing, changes what differs, and a
// second apply of the same files changes nothing.
func TestCLIApply(t *testing.T) {
	c := newCLI(t, startAPI(t))
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "fleet.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	doc := func(name, extra string) string {
		return "apiVersion: otherix.dev/v1\nkind: VM\nmetadata:\n  name: " + name + "\nspec:\n  image: {url: " + image + "}\n  power_state: stopped\n" + extra
	}
	fleet := write(doc("a1", "") + "---\n" + doc("a2", "  cpus: 2\n  memory_mib: 1024\n"))

	out := c.ok("apply", "-f", fleet)
	for _, want := range []string{"vm/a1 created (task ", "vm/a2 created (task "} {
		if !strings.Contains(out, want) {
			t.Fatalf("first apply printed %q, want %q", out, want)
		}
	}
	c.settle()
	if out := c.ok("apply", "-f", fleet); out != "vm/a1 unchanged\nvm/a2 unchanged\n" {
		t.Fatalf("second apply is not a no-op: %q", out)
	}
	var tasks struct {
		Items []messages.Task `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("task", "list", "-o", "json")), &tasks); err != nil || len(tasks.Items) != 2 {
		t.Fatalf("the second apply made tasks: %+v %v", tasks.Items, err)
	}

	// A change in place: a PATCH, no task.
	fleet = write(doc("a1", "  cpus: 3\n  disk_gib: 30\n  user_data: \"#cloud-config\\n\"\n") + "---\n" + doc("a2", "  cpus: 2\n  memory_mib: 1024\n"))
	out = c.ok("apply", "-f", fleet)
	if !strings.Contains(out, "vm/a1 configured (cpus 1→3, disk 10GiB→30GiB, user_data)\n") || !strings.Contains(out, "vm/a2 unchanged\n") {
		t.Fatalf("changing apply printed %q", out)
	}
	var vm messages.VM
	if err := json.Unmarshal([]byte(c.ok("vm", "get", "a1", "-o", "json")), &vm); err != nil ||
		vm.Spec.CPUs != 3 || vm.Spec.DiskGiB != 30 || vm.Spec.UserData != "#cloud-config\n" || vm.Generation != 2 {
		t.Fatalf("after apply: %+v gen %d, %v", vm.Spec, vm.Generation, err)
	}
	var report struct {
		Items []applied `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("apply", "-f", fleet, "-o", "json")), &report); err != nil || len(report.Items) != 2 ||
		report.Items[0].Action != "unchanged" || report.Items[0].VM == nil || report.Items[0].VM.Name != "a1" {
		t.Fatalf("apply -o json: %+v %v", report.Items, err)
	}

	// A disk never shrinks and an image never changes in place: refused for
	// that VM, the others still go.
	fleet = write(doc("a1", "  cpus: 3\n  disk_gib: 20\n") + "---\n" + doc("a3", ""))
	stderr := c.fails("1 of 2 resources failed", "apply", "-f", fleet)
	if !strings.Contains(stderr, "vm/a1: spec.disk_gib: a disk only grows") {
		t.Fatalf("shrink: %s", stderr)
	}
	c.ok("get", "vm", "a3")

	// A document that does not check (a pool without a driver) stops the
	// whole file: nothing is sent.
	fleet = write(doc("a4", "") + "---\napiVersion: otherix.dev/v1\nkind: StoragePool\nmetadata: {name: fast}\nspec: {}\n")
	c.fails("spec.driver: is required", "apply", "-f", fleet)
	c.fails("[not_found]", "get", "vm", "a4")
}
