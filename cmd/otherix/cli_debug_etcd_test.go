//go:build etcd

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIDebugPprof: an admin fetches the replica's goroutine dump and a
// heap profile to a 0600 file; a developer is told the profile does not
// exist, as for anything they may not see; an unknown profile is named.
func TestCLIDebugPprof(t *testing.T) {
	url := startAPI(t)
	c := newCLI(t, url)
	if out := c.ok("debug", "pprof", "goroutine", "--debug", "2"); !strings.Contains(out, "goroutine ") || !strings.Contains(out, "etcdserver") {
		t.Fatalf("goroutine dump of the replica:\n%.500s", out)
	}
	file := filepath.Join(t.TempDir(), "heap.pprof")
	c.ok("debug", "pprof", "heap", "-f", file)
	st, err := os.Stat(file)
	if err != nil || st.Size() == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("heap profile file: %v %v", st, err)
	}
	c.fails("[unknown_profile]", "debug", "pprof", "nonsense")

	c.stdin = "developer-password-1\n"
	c.ok("user", "create", "dev@example.com", "--role", "developer", "--display-name", "Dev", "--password-stdin")
	c.login(url, "dev@example.com", "developer-password-1", "--context", "dev")
	c.fails("[not_found]", "debug", "pprof", "goroutine", "--debug", "2")
}
