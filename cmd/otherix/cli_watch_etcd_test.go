//go:build etcd

package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// syncBuffer is a buffer a running command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCLIListWatch runs "vm list -w" against the real API: it prints the
// table, then a line per change of a VM made after the list, and exits
// cleanly when interrupted.
func TestCLIListWatch(t *testing.T) {
	url := startAPI(t)
	c := newCLI(t, url)
	c.ok("vm", "create", "before", "--image", image)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- runIO(ctx, []string{"--config", c.cfg, "vm", "list", "-w"}, strings.NewReader(""), &out, &errOut)
	}()
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "the table", func() bool {
		return strings.Contains(out.String(), "before")
	})
	c.ok("vm", "create", "after", "--image", image)
	testutil.EventuallyReport(t, 30*time.Second, 10*time.Millisecond, "a line for the new VM", func() (bool, string) {
		return strings.Contains(out.String(), "ADDED   after "), out.String()
	})
	cancel()
	select {
	case got := <-code:
		if got != 0 {
			t.Fatalf("vm list -w exited %d: %s", got, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("vm list -w did not stop when interrupted")
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "before") {
		t.Fatalf("the table does not come first:\n%s", out.String())
	}
	for _, l := range lines[2:] {
		if strings.HasPrefix(l, "ADDED   before") {
			t.Fatalf("a VM from the list was reported again as added:\n%s", out.String())
		}
	}
	// A name with -w, and -o yaml, are usage errors.
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"drop the name", []string{"get", "vm", "before", "-w"}},
		{"-o table, wide or json", []string{"vm", "list", "-w", "-o", "yaml"}},
	} {
		if got, _, stderr := c.run(tc.args...); got != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("otherix %v: exit %d, want 2 with %q: %s", tc.args, got, tc.want, stderr)
		}
	}
}
