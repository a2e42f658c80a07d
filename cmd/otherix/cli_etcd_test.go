//go:build etcd

package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// startAPI runs the real control plane in-process: embedded etcd, the
// actors and the REST API, with job backoffs short enough that a create
// with no node to go to fails within the test.
func startAPI(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	m, err := etcd.Start(ctx, etcd.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(m.Close)
	st := store.New(m.Client())
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatalf("seed settings: %v", err)
	}
	gw, err := gateway.Start(ctx, st, gateway.Config{JobBackoffBase: 20 * time.Millisecond,
		JobBackoffMax: 50 * time.Millisecond, JobAttempts: 2}, log)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	t.Cleanup(gw.Close)
	srv := httptest.NewServer(server.New(server.Config{}, gw, log).Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// cli runs the CLI against one API.
type cli struct {
	t   *testing.T
	url string
}

// run runs a command and returns its exit code, stdout and stderr.
func (c cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	return runCLI(c.t, c.url, args...)
}

// ok runs a command that must succeed and returns its stdout.
func (c cli) ok(args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run(args...)
	if code != 0 {
		c.t.Fatalf("otherix %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// fails runs a command that must fail mentioning want, and returns stderr.
func (c cli) fails(want string, args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run(args...)
	if code != 1 || !strings.Contains(stderr, want) {
		c.t.Fatalf("otherix %s: exit %d, want 1 with %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stderr
}

// settle waits for every task to end, so that the next operation on a VM
// is not refused as vm_busy.
func (c cli) settle() {
	c.t.Helper()
	var tasks struct {
		Items []messages.Task `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("task", "list", "-o", "json")), &tasks); err != nil {
		c.t.Fatal(err)
	}
	for _, task := range tasks.Items {
		// Failed creates exit 1: settle only needs them finished.
		if code, _, stderr := c.run("task", "wait", task.ID, "--timeout", "30s"); code != 0 && strings.Contains(stderr, "[wait_timeout]") {
			c.t.Fatalf("task %s did not finish: %s", task.ID, stderr)
		}
	}
}

const image = "https://img.example/d.qcow2"

func TestCLIEndToEnd(t *testing.T) {
	c := cli{t: t, url: startAPI(t)}

	out := c.ok("vm", "create", "web-1", "--image", image)
	if !strings.Contains(out, "TASK") || !strings.Contains(out, "vm.create") || !strings.Contains(out, "web-1") {
		t.Fatalf("create printed %q", out)
	}

	var vm messages.VM
	if err := json.Unmarshal([]byte(c.ok("vm", "get", "web-1", "-o", "json")), &vm); err != nil || vm.Name != "web-1" || vm.Spec.Image.URL != image {
		t.Fatalf("vm get -o json: %+v, %v", vm, err)
	}
	if out := c.ok("vm", "get", vm.ID, "-o", "yaml"); !strings.Contains(out, "name: web-1\n") {
		t.Fatalf("vm get by id -o yaml: %q", out)
	}
	if out := c.ok("vm", "list"); !strings.Contains(out, "NAME") || !strings.Contains(out, "web-1") {
		t.Fatalf("vm list: %q", out)
	}

	manifest := filepath.Join(t.TempDir(), "vms.yaml")
	body := "kind: VM\nname: web-2\nspec: {image: {url: " + image + "}, cpus: 2}\n---\n" +
		"apiVersion: otherix.io/v1\nkind: vm\nname: web-3\nspec: {image: {url: " + image + "}, power_state: stopped}\n"
	if err := os.WriteFile(manifest, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out = c.ok("create", "-f", manifest)
	for _, want := range []string{"vm/web-2 created (task ", "vm/web-3 created (task "} {
		if !strings.Contains(out, want) {
			t.Fatalf("create -f printed %q, want %q", out, want)
		}
	}
	if out := c.ok("vm", "list", "--limit", "1", "-o", "json"); strings.Count(out, `"name": "web-`) != 3 {
		t.Fatalf("paged list does not hold all three VMs: %s", out)
	}

	c.fails("[vm_name_conflict]", "vm", "create", "web-1", "--image", image)
	stderr := c.fails("Error: 2 of 2 resources failed [vm_name_conflict]", "create", "-f", manifest)
	if !strings.Contains(stderr, "vm/web-2: a vm with name \"web-2\" already exists [vm_name_conflict]") {
		t.Fatalf("create -f conflict: %s", stderr)
	}

	// No node has enrolled, so the create runs out of attempts: exactly what
	// --wait must report.
	c.fails("[no_schedulable_node]", "vm", "create", "x", "--image", image, "--wait", "--wait-timeout", "1m")
	if out := c.ok("vm", "describe", "x"); !strings.Contains(out, "Name:        x\n") || !strings.Contains(out, "Phase:") {
		t.Fatalf("describe: %s", out)
	}

	c.settle()
	c.ok("vm", "delete", "web-1", "--wait")
	c.fails("[not_found]", "vm", "get", "web-1")

	out = c.ok("task", "list")
	for _, want := range []string{"vm.create", "vm.delete", "success", "failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("task list lacks %q:\n%s", want, out)
		}
	}

	c.ok("delete", "-f", manifest, "--wait")
	var left struct {
		Items []messages.VM `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("vm", "list", "-o", "json")), &left); err != nil || len(left.Items) != 1 || left.Items[0].Name != "x" {
		t.Fatalf("after delete -f: %+v, %v", left.Items, err)
	}
	c.fails("[not_found]", "delete", "-f", manifest)
	c.ok("delete", "-f", manifest, "--ignore-not-found")
}
