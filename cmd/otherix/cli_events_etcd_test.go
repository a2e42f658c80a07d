//go:build etcd

package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// TestCLIEvents runs "otherix events" against the real API: the table of
// lifecycle events, filtered by --type and --object, -o json as the API
// answers, and -f, which prints each new event once, after the list, and
// exits cleanly when interrupted.
func TestCLIEvents(t *testing.T) {
	c := newCLI(t, startAPI(t))
	c.ok("vm", "create", "before", "--image", image)
	c.settle() // no node: the create fails, which is an event too

	out := c.ok("events")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "AGE") || !strings.Contains(lines[0], "OBJECT") ||
		!strings.Contains(lines[1], "vm.created") || !strings.Contains(lines[1], "vm/before") ||
		!strings.Contains(lines[2], "task.failed") || !strings.Contains(lines[2], "task/before") {
		t.Fatalf("otherix events printed:\n%s", out)
	}
	if out := c.ok("events", "--type", "task", "--since", "10m"); strings.Contains(out, "vm.created") || !strings.Contains(out, "task.failed") {
		t.Fatalf("--type task printed:\n%s", out)
	}
	if out := c.ok("events", "--object", "nothing-here"); strings.Count(out, "\n") != 1 {
		t.Fatalf("--object nothing-here printed:\n%s", out)
	}
	var doc struct {
		Items []messages.Event `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("events", "-o", "json", "--type", "vm.created")), &doc); err != nil ||
		len(doc.Items) != 1 || doc.Items[0].Object.Name != "before" || doc.Items[0].Revision == 0 {
		t.Fatalf("-o json: %+v, %v", doc, err)
	}
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"--type", []string{"events", "--type", "vms"}},
		{"-o table, wide or json", []string{"events", "-f", "-o", "yaml"}},
	} {
		if got, _, stderr := c.run(tc.args...); got != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("otherix %v: exit %d, want 2 with %q: %s", tc.args, got, tc.want, stderr)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fout, ferr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- runIO(ctx, []string{"--config", c.cfg, "events", "-f", "--type", "vm"}, strings.NewReader(""), &fout, &ferr)
	}()
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "the list", func() bool {
		return strings.Contains(fout.String(), "vm/before")
	})
	c.ok("vm", "create", "after", "--image", image)
	testutil.EventuallyReport(t, 30*time.Second, 10*time.Millisecond, "a line for the new VM's event", func() (bool, string) {
		return strings.Contains(fout.String(), "vm/after"), fout.String()
	})
	cancel()
	select {
	case got := <-code:
		if got != 0 {
			t.Fatalf("events -f exited %d: %s", got, ferr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("events -f did not stop when interrupted")
	}
	got := fout.String()
	if strings.Count(got, "vm/before") != 1 || strings.Contains(got, "task.failed") {
		t.Fatalf("events -f --type vm printed an event twice, or one of another type:\n%s", got)
	}
}
