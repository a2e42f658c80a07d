//go:build netfabric

package netfabric

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netfabric tests need root: they create network namespaces, links and nftables tables (run `sudo make test-netfabric`)")
	}
}

// testNS is a named network namespace created by a test and deleted (with
// everything in it) by its cleanup.
type testNS struct {
	name string
	path string
	h    netns.NsHandle
	nl   *netlink.Handle
}

var nsSeq struct {
	sync.Mutex
	n int
}

func newNS(t *testing.T, role string) *testNS {
	t.Helper()
	nsSeq.Lock()
	nsSeq.n++
	name := fmt.Sprintf("oxt-%d-%d-%s", os.Getpid(), nsSeq.n, role)
	nsSeq.Unlock()
	if err := netnstest.PrepareRunDir(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	var h netns.NsHandle
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		h, err = netns.NewNamed(name) // switches this thread into the new namespace
		if rerr := netns.Set(orig); rerr != nil {
			errc <- rerr // thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	n := &testNS{name: name, path: filepath.Join("/var/run/netns", name), h: h}
	t.Cleanup(func() {
		if n.nl != nil {
			n.nl.Close()
		}
		n.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.nl = nl
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	must(t, nl.LinkSetUp(lo))
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (n *testNS) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: link %s: %v", n.name, name, err)
	}
	return l
}

func (n *testNS) hasLink(name string) bool {
	_, err := n.nl.LinkByName(name)
	return err == nil
}

// vethInto creates a veth pair: local end name in n (attached to master if
// given, up), the peer named peerName inside other, with mtu and mac.
func (n *testNS) vethInto(t *testing.T, name string, master netlink.Link, other *testNS, peerName string, mtu int, mac net.HardwareAddr) netlink.Link {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, PeerName: peerName, PeerNamespace: netlink.NsFd(int(other.h)), PeerHardwareAddr: mac}
	must(t, n.nl.LinkAdd(v))
	l := n.link(t, name)
	if master != nil {
		must(t, n.nl.LinkSetMaster(l, master))
	}
	must(t, n.nl.LinkSetUp(l))
	p := other.link(t, peerName)
	must(t, other.nl.LinkSetMTU(p, mtu))
	must(t, other.nl.LinkSetUp(p))
	return l
}

func (n *testNS) addAddr(t *testing.T, dev, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, err)
	must(t, n.nl.AddrAdd(n.link(t, dev), a))
}

// vmRoutes gives an endpoint the routes a guest gets: the anycast gateway
// on-link and the default route through it.
func (n *testNS) vmRoutes(t *testing.T, dev string) {
	t.Helper()
	l := n.link(t, dev)
	must(t, n.nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixIPNet(netip.PrefixFrom(GatewayIP, 32)), Scope: netlink.SCOPE_LINK}))
	must(t, n.nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(GatewayIP.AsSlice())}))
}

// udpEcho serves in n on addr, replying "<payload length> from <source ip>".
func udpEcho(t *testing.T, n *testNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	must(t, inNS(n.h, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ua := from.(*net.UDPAddr)
			pc.WriteTo([]byte(fmt.Sprintf("%d from %s", k, ua.IP)), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// udpProbe sends size bytes from n to dst until a reply arrives or timeout
// passes; it returns the reply ("" for none).
func udpProbe(t *testing.T, n *testNS, dst string, size int, timeout time.Duration) string {
	t.Helper()
	var c net.Conn
	must(t, inNS(n.h, func() error {
		var err error
		c, err = net.Dial("udp4", dst)
		return err
	}))
	defer c.Close()
	payload := make([]byte, size)
	buf := make([]byte, 256)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c.Write(payload)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, err := c.Read(buf)
		if err == nil {
			return string(buf[:k])
		}
	}
	return ""
}

// sniffer counts IPv4 UDP ports seen on one interface of a namespace.
type sniffer struct {
	mu    sync.Mutex
	ports map[uint16]int
	total int
	stop  chan struct{}
	done  sync.WaitGroup
}

func sniff(t *testing.T, n *testNS, dev string) *sniffer {
	t.Helper()
	idx := n.link(t, dev).Attrs().Index
	proto := uint16(unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8)
	var fd int
	must(t, inNS(n.h, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: idx}); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	}))
	s := &sniffer{ports: map[uint16]int{}, stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		buf := make([]byte, 65536)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			b := buf[:k]
			if len(b) < 34 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
				continue
			}
			ihl := int(b[14]&0x0f) * 4
			if b[23] != unix.IPPROTO_UDP || len(b) < 14+ihl+4 {
				continue
			}
			sp := binary.BigEndian.Uint16(b[14+ihl:])
			dp := binary.BigEndian.Uint16(b[14+ihl+2:])
			s.mu.Lock()
			s.total++
			s.ports[sp]++
			if dp != sp {
				s.ports[dp]++
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.close(); unix.Close(fd) })
	return s
}

func (s *sniffer) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}

func (s *sniffer) count(port uint16) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ports[port], s.total
}

// node is one namespaced node with a Fabric.
type node struct {
	ns       *testNS
	fab      *Fabric
	underlay netip.Addr
	tunnel   netip.Prefix
}

func newNode(t *testing.T, ul *testNS, ulBridge netlink.Link, role string, underlay netip.Addr, tunnel netip.Prefix) *node {
	t.Helper()
	ns := newNS(t, role)
	ul.vethInto(t, "u"+role, ulBridge, ns, "eth0", 1500, nil)
	ns.addAddr(t, "eth0", underlay.String()+"/24")
	fab, err := New(Options{
		Netns:       ns.path,
		IfPrefix:    "ox",
		WireGuardIf: fmt.Sprintf("oxw%d%s", os.Getpid()%1000000, role),
		KeyDir:      t.TempDir(),
		Logf:        t.Logf,
	})
	if err != nil {
		t.Fatalf("new fabric %s: %v", role, err)
	}
	t.Cleanup(func() {
		if err := fab.Close(); err != nil {
			t.Errorf("close fabric %s: %v", role, err)
		}
	})
	return &node{ns: ns, fab: fab, underlay: underlay, tunnel: tunnel}
}

func (n *node) reconcile(t *testing.T, d Desired) Report {
	t.Helper()
	rep, err := n.fab.Reconcile(context.Background(), d)
	if err != nil {
		t.Fatalf("reconcile %s: %v (actions %v)", n.ns.name, err, rep.Actions)
	}
	return rep
}

func isNotExist(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || (err != nil && strings.Contains(err.Error(), "not found"))
}
