//go:build etcd

package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestCLIQuota: an admin sets a developer's quota with user quota set,
// user get and user quota get show it with the usage, and a create over it
// fails with quota_exceeded.
func TestCLIQuota(t *testing.T) {
	url := startAPI(t)
	c := &cli{t: t, cfg: filepath.Join(t.TempDir(), "config")}
	c.login(url, adminEmail, adminPassword, "--context", "admin")
	c.stdin = "developer-password-1\n"
	c.ok("user", "create", "dev@example.com", "--role", "developer", "--password-stdin")
	out := c.ok("user", "quota", "set", "dev@example.com", "--vms", "1", "--cpus", "2", "--memory", "1Gi", "--disk", "20Gi")
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{"vms 0 1", "cpus 0 2", "memory 0Mi 1024Mi", "disk 0Gi 20Gi"} {
		if !lines[want] {
			t.Fatalf("quota set printed:\n%s\nwant a line %q", out, want)
		}
	}
	for _, args := range [][]string{{"user", "quota", "set", "dev@example.com"}, {"user", "quota", "set", "dev@example.com", "--disk", "lots"}} {
		if code, _, stderr := c.run(args...); code != 2 || !strings.Contains(stderr, "[usage]") {
			t.Fatalf("otherix %s: exit %d, %s; want a usage error", strings.Join(args, " "), code, stderr)
		}
	}

	c.login(url, "dev@example.com", "developer-password-1", "--context", "dev")
	c.ok("vm", "create", "a", "--image", image, "--stopped", "--cpus", "2", "--memory", "1Gi")
	c.fails("[quota_exceeded]", "vm", "create", "b", "--image", image, "--stopped")
	c.fails("[forbidden]", "user", "quota", "set", "dev@example.com", "--vms", "9")

	out = c.ok("--context", "admin", "user", "get", "dev@example.com")
	if !strings.Contains(out, "VMS") || !strings.Contains(out, "1/1") || !strings.Contains(out, "1024Mi/1024Mi") {
		t.Fatalf("user get:\n%s", out)
	}
	// Flags not named keep their value; "unlimited" lifts one limit.
	var v messages.QuotaView
	if err := json.Unmarshal([]byte(c.ok("--context", "admin", "user", "quota", "set", "dev@example.com", "--vms", "unlimited", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Quota.VMs != nil || v.Quota.CPUs == nil || *v.Quota.CPUs != 2 || v.Usage.VMs != 1 {
		t.Fatalf("quota after lifting vms: %+v", v)
	}
	if out := c.ok("--context", "admin", "user", "quota", "get", "dev@example.com"); !strings.Contains(out, "unlimited") {
		t.Fatalf("quota get:\n%s", out)
	}
}
