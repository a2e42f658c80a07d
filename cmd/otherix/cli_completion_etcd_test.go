//go:build etcd

package main

import (
	"slices"
	"strings"
	"testing"
)

// completions runs cobra's hidden __complete as a shell's Tab does and
// returns the candidates (the last line is the directive).
func (c *cli) completions(args ...string) []string {
	c.t.Helper()
	out := c.ok(append([]string{"__complete"}, args...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		c.t.Fatalf("__complete %v printed no directive:\n%s", args, out)
	}
	var got []string
	for _, l := range lines[:len(lines)-1] {
		got = append(got, strings.SplitN(l, "\t", 2)[0])
	}
	slices.Sort(got)
	return got
}

// TestCLICompletesNamesFromTheServer: Tab completes VM and network names
// from the real API, filtered by what was typed, as the caller sees them
// (a developer does not see the admin's VMs); kinds complete for get.
func TestCLICompletesNamesFromTheServer(t *testing.T) {
	url := startAPI(t)
	c := newCLI(t, url)
	for _, n := range []string{"alpha", "alfa2", "beta"} {
		c.ok("vm", "create", n, "--image", image, "--stopped")
	}
	c.ok("network", "create", "backend", "--cidr", "10.77.0.0/24")

	want := func(got []string, w ...string) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("completions %v, want %v", got, w)
		}
	}
	want(c.completions("vm", "get", "al"), "alfa2", "alpha")
	want(c.completions("vm", "stop", ""), "alfa2", "alpha", "beta")
	want(c.completions("vm", "create", ""))        // a new name: nothing to offer
	want(c.completions("vm", "get", "alpha", "b")) // one name only
	want(c.completions("network", "delete", "b"), "backend")
	want(c.completions("get", "n"), "network", "node")
	want(c.completions("get", "vms", "b"), "beta")
	want(c.completions("describe", "network", ""), "backend")

	c.stdin = "developer-password-1\n"
	c.ok("user", "create", "dev@example.com", "--role", "developer", "--display-name", "Dev", "--password-stdin")
	c.login(url, "dev@example.com", "developer-password-1", "--context", "dev")
	want(c.completions("vm", "get", ""))
}
