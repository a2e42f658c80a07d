package netfabric

import (
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNS runs fn on an OS thread switched into ns. Netlink handles and the
// nftables connection are bound to the namespace by their sockets; inNS is
// for what binds to the calling thread's namespace instead: creating taps and
// TUN devices through /dev/net/tun, UDP sockets, generic netlink clients and
// /proc/sys writes. fn runs on a fresh goroutine so that, if the thread cannot
// be switched back, it is thrown away with the goroutine rather than returned
// to the scheduler in the wrong namespace.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			runtime.UnlockOSThread()
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it exits with this goroutine.
			errc <- fmt.Errorf("restore netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// writeSysctl sets a /proc/sys value inside ns if it differs, reporting
// whether it changed anything.
func writeSysctl(ns netns.NsHandle, path, value string) (changed bool, err error) {
	err = inNS(ns, func() error {
		cur, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if string(cur) == value+"\n" || string(cur) == value {
			return nil
		}
		changed = true
		return os.WriteFile(path, []byte(value), 0o644)
	})
	if err != nil {
		return false, fmt.Errorf("sysctl %s: %w", path, err)
	}
	return changed, nil
}
