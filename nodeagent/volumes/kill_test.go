package volumes

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// killEnv carries a kill helper's orders from TestKill9 to the child.
const killEnv = "OTHERIX_VOLUMES_KILL"

// TestKill9 is TestCrashRecovery with a real kill: a child process (this
// test binary) runs the operation and sends itself SIGKILL at the step, so
// no deferred cleanup and no in-memory state can help; then this process
// starts a driver on the pool as the restarted agent, runs Recover and
// checks the same invariants.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: one child process per crash point")
	}
	for _, e := range envs {
		t.Run(e.name, func(t *testing.T) {
			d, root := newDriver(t, e, "node-a")
			base := makeBase(t, t.TempDir(), 8*mib, 0x5a)
			n := 0
			for _, c := range crashCases(base) {
				var points []string
				n++
				p := fmt.Sprintf("k%d", n)
				if c.setup != nil {
					c.setup(t, d, p)
				}
				setCrash(d, func(p string) error { points = append(points, p); return nil })
				if err := c.op(d, p); err != nil {
					t.Fatalf("%s dry run: %v", c.name, err)
				}
				setCrash(d, nil)
				for _, point := range points {
					t.Run(c.name+"/"+point, func(t *testing.T) {
						n++
						p := fmt.Sprintf("k%d", n)
						if c.setup != nil {
							c.setup(t, d, p)
						}
						cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.count=1")
						cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%s|%s|%s|%s", killEnv, e.driver, root, base, c.name, p, point))
						out, err := cmd.CombinedOutput()
						var exit *exec.ExitError
						if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
							t.Fatalf("child was not killed at %s: %v: %s", point, err, out)
						}
						restarted := mustNew(t, e.driver, root, "node-a")
						if _, err := restarted.Recover(bg); err != nil {
							t.Fatalf("Recover: %v", err)
						}
						if l := leftovers(t, root); len(l) != 0 {
							t.Fatalf("left behind after Recover: %v", l)
						}
						c.check(t, restarted, p)
					})
				}
			}
		})
	}
}

// TestKillHelper is the child of TestKill9; it does nothing in a normal
// run.
func TestKillHelper(t *testing.T) {
	orders := os.Getenv(killEnv)
	if orders == "" {
		t.Skip("only run as TestKill9's child")
	}
	var driver, root, base, name, p, point string
	fields := strings.SplitN(orders, "|", 6)
	if len(fields) != 6 {
		t.Fatalf("bad orders %q", orders)
	}
	driver, root, base, name, p, point = fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]
	d := mustNew(t, driver, root, "node-a")
	setCrash(d, func(got string) error {
		if got == point {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return nil
	})
	for _, c := range crashCases(base) {
		if c.name == name {
			err := c.op(d, p)
			t.Fatalf("%s returned (%v) instead of being killed at %s", name, err, point)
		}
	}
	t.Fatalf("no case %q", name)
}
