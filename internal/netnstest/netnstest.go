// Package netnstest builds network namespaces for tests that send real
// traffic: named namespaces (as `ip netns` makes them) removed at cleanup,
// and running code inside one. Tests keep every packet inside namespaces
// they made; the host namespace gets nothing.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

// RequireRoot skips t, saying why, when not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// IP runs iproute2's ip with args and returns its output; a failure fails t.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var runDir struct {
	once sync.Once
	err  error
}

// PrepareRunDir makes /run/netns the shared bind mount iproute2 makes of it,
// by having ip add and delete a namespace, once per process. Code that
// creates named namespaces itself (netns.NewNamed) must call it first: on a
// host where /run/netns is not yet a mount point, NewNamed mounts namespaces
// on the parent filesystem, and the first `ip netns` of any process (another
// test package running in parallel) then bind-mounts /run/netns onto itself
// recursively, copying those mounts. Deleting such a namespace detaches the
// copy and fails on the original with EBUSY, leaving it mounted. Two ip
// processes racing to make the mount stack peers, which stay consistent.
func PrepareRunDir() error {
	runDir.once.Do(func() {
		name := fmt.Sprintf("otherix-prep-%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			runDir.err = fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
			return
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			runDir.err = fmt.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return runDir.err
}

// New creates the namespace <prefix>-<pid>-<role> with lo up and deletes it
// (and every link in it) at cleanup, also when t fails. It returns the name.
func New(t testing.TB, prefix, role string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), role)
	IP(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	IP(t, "-n", name, "link", "set", "lo", "up")
	return name
}

// In runs fn on an OS thread inside the named namespace and waits for it.
// Sockets fn opens stay in that namespace. The thread is thrown away
// afterwards rather than switched back, so no goroutine ever runs in the
// wrong namespace. fn may call t.Fatal: In returns when fn's goroutine ends
// either way.
func In(t testing.TB, name string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		ns, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		fn()
	}()
	<-finished
	select {
	case err := <-errc:
		t.Fatalf("enter netns %s: %v", name, err)
	default:
	}
}
