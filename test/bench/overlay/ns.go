package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// reverts is the bench's revert stack: every namespace, process and Fabric
// it makes pushes its undo, and run pops them all in reverse on the way
// out, also after a failure or an interrupt.
type reverts []func() error

func (r *reverts) push(fn func() error) { *r = append(*r, fn) }

func (r *reverts) unwind() error {
	var errs []error
	for i := len(*r) - 1; i >= 0; i-- {
		errs = append(errs, (*r)[i]())
	}
	*r = nil
	return errors.Join(errs...)
}

// benchNS is a named network namespace the bench created.
type benchNS struct {
	name string
	path string
	h    netns.NsHandle
	nl   *netlink.Handle
}

// newNS creates oxbench-<pid>-<role> with lo up; its deletion (which takes
// every link inside with it) goes on rv.
func newNS(rv *reverts, role string) (*benchNS, error) {
	name := fmt.Sprintf("oxbench-%d-%s", os.Getpid(), role)
	var h netns.NsHandle
	err := onFreshThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		h, err = netns.NewNamed(name) // moves this thread into it
		if serr := netns.Set(orig); serr != nil {
			return fmt.Errorf("restore netns: %w", serr)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	n := &benchNS{name: name, path: filepath.Join("/var/run/netns", name), h: h}
	rv.push(func() error {
		if n.nl != nil {
			n.nl.Close()
		}
		n.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
		return nil
	})
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	return n, n.nl.LinkSetUp(lo)
}

// onFreshThread runs fn on a locked OS thread that is thrown away
// afterwards, so a thread left in another namespace never runs Go code again.
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- fn()
	}()
	return <-errc
}

// in runs fn with the calling thread inside n: sockets made there belong
// to n for their whole life, whichever goroutine uses them later.
func (n *benchNS) in(fn func() error) error {
	return onFreshThread(func() error {
		if err := netns.Set(n.h); err != nil {
			return fmt.Errorf("enter %s: %w", n.name, err)
		}
		return fn()
	})
}

func (n *benchNS) sysctl(path, value string) error {
	return n.in(func() error { return os.WriteFile(path, []byte(value), 0o644) })
}

// veth creates name in n (attached to master when given) and peer in other,
// both up with mtu; mac is the peer's address (nil: random).
func (n *benchNS) veth(name string, master netlink.Link, other *benchNS, peer string, mtu int, mac net.HardwareAddr) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: peer, PeerNamespace: netlink.NsFd(int(other.h)), PeerHardwareAddr: mac}
	if err := n.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s: %w", n.name, name, err)
	}
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return err
	}
	if master != nil {
		if err := n.nl.LinkSetMaster(l, master); err != nil {
			return err
		}
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return err
	}
	p, err := other.nl.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := other.nl.LinkSetMTU(p, mtu); err != nil {
		return err
	}
	return other.nl.LinkSetUp(p)
}

func (n *benchNS) addr(dev, cidr string) error {
	l, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	return n.nl.AddrAdd(l, a)
}

// route adds dst via gw (both IPv4).
func (n *benchNS) route(dst, gw string) error {
	return n.nl.RouteAdd(&netlink.Route{Dst: prefixNet(netip.MustParsePrefix(dst)), Gw: net.ParseIP(gw)})
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
