//go:build netfabric

package netfabric

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/nodeagent/dhcpd"
)

// vnetHdrLen is the virtio-net header that precedes every frame on a tap
// opened with IFF_VNET_HDR, as QEMU opens ours.
const vnetHdrLen = 10

// guestTap attaches to a tap the Fabric made, the way QEMU does, standing in
// for the guest: what it writes enters the bridge from the VM's NIC, what it
// reads is what the bridge delivered to the VM.
type guestTap struct {
	f      *os.File
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

func openGuestTap(t *testing.T, ns *testNS, name string) *guestTap {
	t.Helper()
	var fd int
	must(t, inNS(ns.h, func() error {
		var err error
		// The tap device is looked up in the namespace /dev/net/tun was
		// opened in.
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}))
	g := &guestTap{f: os.NewFile(uintptr(fd), name), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		buf := make([]byte, 65536)
		for {
			k, err := g.f.Read(buf)
			if err != nil {
				return
			}
			if k > vnetHdrLen {
				g.mu.Lock()
				g.frames = append(g.frames, slices.Clone(buf[vnetHdrLen:k]))
				g.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { g.f.Close(); <-g.done })
	return g
}

func (g *guestTap) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := g.f.Write(append(make([]byte, vnetHdrLen), frame...)); err != nil {
		t.Fatalf("write to tap %s: %v", g.f.Name(), err)
	}
}

// saw reports whether any received frame satisfies match.
func (g *guestTap) saw(match func([]byte) bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.ContainsFunc(g.frames, match)
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ethFrame(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := append(append(slices.Clone([]byte(dst)), src...), byte(typ>>8), byte(typ))
	b = append(b, payload...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udp4 is an IPv4 UDP packet (header checksum set: br_netfilter drops bad
// ones; UDP checksum 0, which IPv4 allows).
func udp4(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, dport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, udp...)
}

func arpPacket(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, byte(op >> 8), byte(op)}
	b = append(append(b, sha...), spa.AsSlice()...)
	return append(append(b, tha...), tpa.AsSlice()...)
}

// routerAdvert is an ICMPv6 router advertisement from a link-local address
// to all nodes, with marker in its body.
func routerAdvert(src net.HardwareAddr, marker string) []byte {
	body := append([]byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}, marker...)
	ip := []byte{0x60, 0, 0, 0, 0, 0, 58, 255}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(body)))
	ll := netip.MustParseAddr("fe80::5054:ff:fe00:a").As16()
	all := netip.MustParseAddr("ff02::1").As16()
	ip = append(append(ip, ll[:]...), all[:]...)
	return ethFrame(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, src, 0x86dd, append(ip, body...))
}

func contains(marker string) func([]byte) bool {
	return func(b []byte) bool { return bytes.Contains(b, []byte(marker)) }
}

// arpFrom matches an ARP packet with sender sha/spa and target tpa.
func arpFrom(sha net.HardwareAddr, spa, tpa netip.Addr) func([]byte) bool {
	return func(b []byte) bool {
		if len(b) < 42 || binary.BigEndian.Uint16(b[12:]) != etherTypeARP {
			return false
		}
		a := b[14:]
		return bytes.Equal(a[8:14], sha) && bytes.Equal(a[14:18], spa.AsSlice()) && bytes.Equal(a[24:28], tpa.AsSlice())
	}
}

// TestAntiSpoofing plays a hostile guest on one tap and checks what reaches
// another VM's tap: frames with a forged source MAC, IPv4 from another VM's
// address, ARP claiming another VM's address or naming another MAC, a DHCP
// server's offer and an IPv6 router advertisement. With the guard removed
// every one of them arrives (so each check can fail); with it, none does,
// while the guest's own traffic, ARP and DHCP requests still flow. The guard
// follows its taps and converges after an agent restart.
func TestAntiSpoofing(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "spoof")
	opts := Options{Netns: ns.path, KeyDir: t.TempDir(), WireGuardIf: fmt.Sprintf("oxs%d", os.Getpid()%1000000)}
	fab, err := New(opts)
	must(t, err)
	t.Cleanup(func() { fab.Close() })
	n := Network{ID: "spoof-net", Name: "lan", CIDR: netip.MustParsePrefix("10.40.0.0/24"), Type: TypeLocal, MTU: 1400}
	macC := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0x0c}
	attacker := NIC{VMID: "vm-attacker", Network: n.ID, MAC: macA, IP: netip.MustParseAddr("10.40.0.10")}
	victim := NIC{VMID: "vm-victim", Network: n.ID, MAC: macB, IP: netip.MustParseAddr("10.40.0.20")}
	other := NIC{VMID: "vm-other", Network: n.ID, MAC: macC, IP: netip.MustParseAddr("10.40.0.30")}
	d := Desired{Networks: []Network{n}, NICs: []NIC{attacker, victim, other}}
	ctx := context.Background()
	_, err = fab.Reconcile(ctx, d)
	must(t, err)

	bad := openGuestTap(t, ns, fab.TapName(attacker))
	good := openGuestTap(t, ns, fab.TapName(victim))
	seq := 0
	// legit sends the attacker's own, well-formed traffic with a fresh
	// marker and waits until the victim has it: every frame the attacker
	// wrote before it has then been through the bridge too.
	legit := func() {
		t.Helper()
		seq++
		m := fmt.Sprintf("legit-%d", seq)
		deadline := time.Now().Add(10 * time.Second)
		for !good.saw(contains(m)) {
			if time.Now().After(deadline) {
				t.Fatalf("the guest's own traffic (%s) did not reach the other VM", m)
			}
			bad.send(t, ethFrame(broadcastMAC, macA, etherTypeIPv4, udp4(attacker.IP, victim.IP, 40000, 9, []byte(m))))
			time.Sleep(20 * time.Millisecond) // resend pace while polling for delivery
		}
	}
	gateway := GatewayIP
	type attack struct {
		name  string
		frame func(round int) []byte
		match func(round int) func([]byte) bool
	}
	marker := func(name string, round int) string { return fmt.Sprintf("%s-%d", name, round) }
	// Target addresses made unique per round, so an ARP from one round is
	// not mistaken for another's.
	tpa := func(round int) netip.Addr { return netip.AddrFrom4([4]byte{10, 40, 0, byte(100 + round)}) }
	attacks := []attack{
		{"source mac of another vm", func(r int) []byte {
			return ethFrame(broadcastMAC, macB, etherTypeIPv4, udp4(attacker.IP, victim.IP, 40000, 9, []byte(marker("srcmac", r))))
		}, func(r int) func([]byte) bool { return contains(marker("srcmac", r)) }},
		{"source mac made up", func(r int) []byte {
			return ethFrame(broadcastMAC, net.HardwareAddr{0x02, 0xde, 0xad, 0, 0, byte(r)}, etherTypeIPv4, udp4(attacker.IP, victim.IP, 40000, 9, []byte(marker("madeup", r))))
		}, func(r int) func([]byte) bool { return contains(marker("madeup", r)) }},
		{"ipv4 source of another vm", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeIPv4, udp4(other.IP, victim.IP, 40000, 9, []byte(marker("srcip", r))))
		}, func(r int) func([]byte) bool { return contains(marker("srcip", r)) }},
		{"gratuitous arp for another vm's ip", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeARP, arpPacket(2, macA, other.IP, broadcastMAC, tpa(r)))
		}, func(r int) func([]byte) bool { return arpFrom(macA, other.IP, tpa(r)) }},
		{"gratuitous arp for the gateway", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeARP, arpPacket(2, macA, gateway, broadcastMAC, tpa(r)))
		}, func(r int) func([]byte) bool { return arpFrom(macA, gateway, tpa(r)) }},
		{"arp with another sender mac", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeARP, arpPacket(1, macC, attacker.IP, net.HardwareAddr{0, 0, 0, 0, 0, 0}, tpa(r)))
		}, func(r int) func([]byte) bool { return arpFrom(macC, attacker.IP, tpa(r)) }},
		{"dhcp offer", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeIPv4, udp4(attacker.IP, netip.MustParseAddr("255.255.255.255"), 67, 68, []byte(marker("offer", r))))
		}, func(r int) func([]byte) bool { return contains(marker("offer", r)) }},
		{"ipv6 router advertisement", func(r int) []byte {
			return routerAdvert(macA, marker("ra", r))
		}, func(r int) func([]byte) bool { return contains(marker("ra", r)) }},
		{"vlan-tagged ipv4", func(r int) []byte {
			inner := append([]byte{0, 7, 0x08, 0x00}, udp4(other.IP, victim.IP, 40000, 9, []byte(marker("vlan", r)))...)
			return ethFrame(broadcastMAC, macA, 0x8100, inner)
		}, func(r int) func([]byte) bool { return contains(marker("vlan", r)) }},
	}
	// Allowed besides plain IPv4: ARP naming the guest itself, an ARP
	// probe (sender 0.0.0.0) and a DHCP discover from 0.0.0.0.
	allowed := []attack{
		{"own arp", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeARP, arpPacket(1, macA, attacker.IP, net.HardwareAddr{0, 0, 0, 0, 0, 0}, tpa(r)))
		}, func(r int) func([]byte) bool { return arpFrom(macA, attacker.IP, tpa(r)) }},
		{"arp probe", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeARP, arpPacket(1, macA, netip.IPv4Unspecified(), net.HardwareAddr{0, 0, 0, 0, 0, 0}, tpa(r)))
		}, func(r int) func([]byte) bool { return arpFrom(macA, netip.IPv4Unspecified(), tpa(r)) }},
		{"dhcp discover", func(r int) []byte {
			return ethFrame(broadcastMAC, macA, etherTypeIPv4, udp4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 68, 67, []byte(marker("discover", r))))
		}, func(r int) func([]byte) bool { return contains(marker("discover", r)) }},
	}
	run := func(round int, list []attack, wantArrive bool) {
		t.Helper()
		for _, a := range list {
			bad.send(t, a.frame(round))
		}
		legit()
		for _, a := range list {
			if got := good.saw(a.match(round)); got != wantArrive {
				t.Errorf("round %d, %s: reached the other VM %v, want %v", round, a.name, got, wantArrive)
			}
		}
	}

	legit() // both taps forward before anything is judged

	// Without the guard every attack arrives: the checks below can fail.
	c := nftConn(t, ns)
	c.DelTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge})
	must(t, c.Flush())
	run(0, attacks, true)

	// The next reconcile puts the guard back; now none arrives.
	rep, err := fab.Reconcile(ctx, d)
	if err != nil || rep.Changes == 0 {
		t.Fatalf("reconcile after the bridge table was deleted: %v %v", rep.Actions, err)
	}
	run(1, attacks, false)
	run(1, allowed, true)

	// An agent restart converges without rewriting anything.
	fab2, err := New(opts)
	must(t, err)
	t.Cleanup(func() { fab2.Close() })
	if rep, err := fab2.Reconcile(ctx, d); err != nil || rep.Changes != 0 {
		t.Fatalf("restarted agent's reconcile: %v %v", rep.Actions, err)
	}
	comments := nftComments(t, ns)
	for _, nic := range d.NICs {
		tag := fab.TapName(nic) + " src mac " + nic.MAC.String()
		if k := countOf(comments, tag); k != 1 {
			t.Errorf("%q present %d times", tag, k)
		}
	}
	run(2, attacks, false)

	// A removed tap takes its guard with it; the others keep theirs.
	d.NICs = []NIC{attacker, victim}
	if _, err := fab2.Reconcile(ctx, d); err != nil {
		t.Fatal(err)
	}
	comments = nftComments(t, ns)
	if slices.ContainsFunc(comments, func(s string) bool { return strings.HasPrefix(s, fab.TapName(other)+" ") }) {
		t.Errorf("rules of a removed tap remain")
	}
	run(3, attacks, false)

	// The agent's own DHCP responder on the bridge still serves the guest
	// through its guard: a discover from 0.0.0.0 gets an offer of its
	// address.
	srv, err := dhcpd.Start(dhcpd.Config{Interface: fab.bridgeName(n.ID), Netns: ns.path},
		[]dhcpd.Lease{{MAC: macA, IP: attacker.IP, PrefixLen: 24, MTU: n.MTU}})
	must(t, err)
	t.Cleanup(func() { srv.Close() })
	disc, err := dhcpv4.NewDiscovery(macA)
	must(t, err)
	offered := func(b []byte) bool {
		if len(b) < 42 || binary.BigEndian.Uint16(b[12:]) != etherTypeIPv4 || b[23] != unix.IPPROTO_UDP {
			return false
		}
		udp := b[14+int(b[14]&0x0f)*4:]
		if binary.BigEndian.Uint16(udp) != 67 {
			return false
		}
		m, err := dhcpv4.FromBytes(udp[8:])
		return err == nil && m.TransactionID == disc.TransactionID && m.MessageType() == dhcpv4.MessageTypeOffer &&
			m.YourIPAddr.Equal(net.IP(attacker.IP.AsSlice()))
	}
	deadline := time.Now().Add(10 * time.Second)
	for !bad.saw(offered) {
		if time.Now().After(deadline) {
			t.Fatal("no DHCP offer from the agent's responder through the guard")
		}
		bad.send(t, ethFrame(broadcastMAC, macA, etherTypeIPv4,
			udp4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 68, 67, disc.ToBytes())))
		time.Sleep(100 * time.Millisecond) // resend pace while polling for the offer
	}
}

func countOf(list []string, s string) int {
	k := 0
	for _, v := range list {
		if v == s {
			k++
		}
	}
	return k
}
