package dhcpd

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzReply feeds the responder what a guest can put on the bridge: any
// UDP payload to port 67. It must never panic, answer only the MAC it has
// a lease for, hand out only that lease's address (or NAK), echo the
// transaction id, and send a reply that encodes, parses back and fits an
// Ethernet frame.
func FuzzReply(f *testing.F) {
	known, _ := net.ParseMAC("02:aa:bb:cc:dd:01")
	leaseIP := netip.MustParseAddr("10.60.0.5")
	mk := func(typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) []byte {
		d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(known), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			f.Fatal(err)
		}
		return d.ToBytes()
	}
	// What a Debian guest's dhclient and busybox udhcpc send.
	f.Add(mk(dhcpv4.MessageTypeDiscover, dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionInterfaceMTU, dhcpv4.OptionClasslessStaticRoute)))
	f.Add(mk(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 60, 0, 5))),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(169, 254, 1, 1)))))
	f.Add(mk(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.IPv4(10, 60, 0, 5))))
	f.Add(mk(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 60, 0, 9)))))
	f.Add(mk(dhcpv4.MessageTypeDiscover, dhcpv4.WithRelay(net.IPv4(10, 0, 0, 1))))
	f.Add(mk(dhcpv4.MessageTypeInform))
	f.Add([]byte{1, 1, 6, 0})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		s := &Server{cfg: Config{Interface: "br0", ServerIP: DefaultServerIP, LeaseTime: DefaultLeaseTime, Log: slog.New(slog.DiscardHandler)}}
		if err := s.SetLeases([]Lease{{MAC: known, IP: leaseIP, PrefixLen: 24, MTU: 1390}}); err != nil {
			t.Fatal(err)
		}
		req, err := dhcpv4.FromBytes(pkt)
		if err != nil {
			return
		}
		resp, to := s.reply(req)
		if resp == nil {
			return
		}
		if to == nil {
			t.Fatal("a reply without a destination")
		}
		if !bytes.Equal(req.ClientHWAddr, known) {
			t.Fatalf("answered unknown MAC %s", req.ClientHWAddr)
		}
		if resp.TransactionID != req.TransactionID || resp.OpCode != dhcpv4.OpcodeBootReply {
			t.Fatalf("reply xid %v op %v to xid %v", resp.TransactionID, resp.OpCode, req.TransactionID)
		}
		switch resp.MessageType() {
		case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck:
			if !resp.YourIPAddr.Equal(net.IP(leaseIP.AsSlice())) {
				t.Fatalf("handed out %s, the lease is %s", resp.YourIPAddr, leaseIP)
			}
			if !to.IP.Equal(net.IPv4bcast) && !to.IP.Equal(net.IP(leaseIP.AsSlice())) {
				t.Fatalf("sent to %s: neither broadcast nor the lease", to)
			}
		case dhcpv4.MessageTypeNak:
			if !to.IP.Equal(net.IPv4bcast) {
				t.Fatalf("NAK sent to %s", to)
			}
		default:
			t.Fatalf("answered with %s", resp.MessageType())
		}
		wire := resp.ToBytes()
		if len(wire) > 1500-28 {
			t.Fatalf("reply of %d bytes does not fit one frame", len(wire))
		}
		back, err := dhcpv4.FromBytes(wire)
		if err != nil {
			t.Fatalf("our own reply does not parse: %v", err)
		}
		if back.MessageType() != resp.MessageType() || !back.YourIPAddr.Equal(resp.YourIPAddr) {
			t.Fatalf("reply changed on the wire: %s -> %s", resp.Summary(), back.Summary())
		}
	})
}
