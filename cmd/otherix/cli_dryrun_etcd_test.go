//go:build etcd

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIDryRun: create, apply and delete -f and vm create with --dry-run
// print what would happen, against a real control plane, and change
// nothing; a dry run the write would fail on fails the same way.
func TestCLIDryRun(t *testing.T) {
	c := newCLI(t, startAPI(t))
	manifest := filepath.Join(t.TempDir(), "fleet.yaml")
	write := func(cpus int) {
		t.Helper()
		y := `kind: Network
metadata: {name: backend}
spec: {cidr: 10.7.0.0/24}
---
kind: VM
metadata: {name: web}
spec:
  image: {url: ` + image + `}
  cpus: ` + string(rune('0'+cpus)) + `
  memory_mib: 256
  power_state: stopped
  networks: [{network: backend, ip: 10.7.0.5}]
`
		if err := os.WriteFile(manifest, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(1)
	// Each document is judged against the cluster as it is: the network
	// would be created, but the VM names a network a dry run did not make.
	code, out, stderr := c.run("create", "-f", manifest, "--dry-run")
	if code != 1 || !strings.Contains(out, "network/backend would be created (10.7.0.0/24, overlay") ||
		!strings.Contains(stderr, `vm/web: spec.networks[0].network: network "backend" does not exist`) {
		t.Fatalf("create --dry-run: exit %d\n%s\n%s", code, out, stderr)
	}
	if got := c.ok("get", "network", "-o", "json"); strings.Contains(got, "backend") {
		t.Fatalf("a dry run created the network: %s", got)
	}
	if got := c.ok("vm", "list", "-o", "json"); strings.Contains(got, `"web"`) {
		t.Fatalf("a dry run created the vm: %s", got)
	}
	if code, _, stderr := c.run("create", "-f", manifest, "--dry-run", "--wait"); code != 2 || !strings.Contains(stderr, "--dry-run writes nothing") {
		t.Fatalf("--dry-run --wait: exit %d, %s", code, stderr)
	}

	c.ok("network", "create", "backend", "--cidr", "10.7.0.0/24")
	code, out, stderr = c.run("create", "-f", manifest, "--dry-run")
	if code != 1 || !strings.Contains(out, "vm/web would be created (1 vCPU, 256MiB, 10GiB disk, amd64) (dry run)") ||
		!strings.Contains(stderr, "network/backend already exists") {
		t.Fatalf("create --dry-run with the network there: exit %d\n%s\n%s", code, out, stderr)
	}
	c.ok("apply", "-f", manifest)
	c.settle()
	c.fails("[vm_name_conflict]", "vm", "create", "web", "--image", image, "--dry-run")
	out = c.ok("vm", "create", "web2", "--image", image, "--cpus", "2", "--dry-run", "-o", "json")
	var r struct {
		DryRun bool   `json:"dry_run"`
		Action string `json:"action"`
		VM     struct {
			Name string `json:"name"`
			Spec struct{ CPUs int }
		} `json:"vm"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || !r.DryRun || r.Action != "create" || r.VM.Name != "web2" || r.VM.Spec.CPUs != 2 {
		t.Fatalf("vm create --dry-run -o json: %v\n%s", err, out)
	}

	write(2)
	out = c.ok("apply", "-f", manifest, "--dry-run")
	if !strings.Contains(out, "network/backend unchanged (dry run)") || !strings.Contains(out, "vm/web would be configured (cpus 1→2) (dry run)") {
		t.Fatalf("apply --dry-run:\n%s", out)
	}
	if got := c.ok("vm", "get", "web", "-o", "json"); !strings.Contains(got, `"cpus": 1`) {
		t.Fatalf("a dry-run apply changed the vm: %s", got)
	}

	// As for the real delete -f (the VM's deletion is a task), the network
	// is still in use by the VM when its document is judged.
	code, out, stderr = c.run("delete", "-f", manifest, "--dry-run")
	if code != 1 || !strings.Contains(out, "vm/web would be deleted (dry run)") || !strings.Contains(stderr, "[network_in_use]") {
		t.Fatalf("delete -f --dry-run: exit %d\n%s\n%s", code, out, stderr)
	}
	c.ok("delete", "vm", "web", "--dry-run")
	c.fails("[network_in_use]", "delete", "network", "backend", "--dry-run")
	if code, _, stderr := c.run("delete", "node", "n1", "--dry-run"); code != 2 || !strings.Contains(stderr, "--dry-run applies to vms and networks") {
		t.Fatalf("delete node --dry-run: exit %d, %s", code, stderr)
	}
	c.ok("vm", "get", "web")
	c.ok("network", "get", "backend")
	if got := c.ok("vm", "list"); strings.Contains(got, "web2") {
		t.Fatalf("web2 exists: %s", got)
	}

	// Kinds whose endpoints take no dry_run are refused, nothing sent.
	pool := filepath.Join(t.TempDir(), "pool.yaml")
	if err := os.WriteFile(pool, []byte("kind: StoragePool\nmetadata: {name: fast}\nspec: {driver: dir, path: /srv/otherix/fast, all_nodes: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"create", "apply", "delete"} {
		c.fails("[dry_run_unsupported]", verb, "-f", pool, "--dry-run")
	}
	if got := c.ok("pool", "list"); strings.Contains(got, "fast") {
		t.Fatalf("a dry run created the pool: %s", got)
	}
}
