package dhcpd

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func testServer(t *testing.T, leases ...Lease) *Server {
	t.Helper()
	s := &Server{cfg: Config{Interface: "br0", ServerIP: DefaultServerIP, LeaseTime: DefaultLeaseTime, Log: slog.New(slog.DiscardHandler)}}
	if err := s.SetLeases(leases); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReply(t *testing.T) {
	known, _ := net.ParseMAC("02:aa:bb:cc:dd:01")
	unknown, _ := net.ParseMAC("02:aa:bb:cc:dd:99")
	s := testServer(t, Lease{MAC: known, IP: netip.MustParseAddr("10.60.0.5"), PrefixLen: 24, MTU: 1390})
	gw := net.IPv4(169, 254, 1, 1).To4()
	msg := func(mac net.HardwareAddr, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		want dhcpv4.MessageType // MessageTypeNone: no answer
		to   string
	}{
		{"discover", msg(known, dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeOffer, "255.255.255.255:68"},
		{"request", msg(known, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 60, 0, 5))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw))), dhcpv4.MessageTypeAck, "255.255.255.255:68"},
		{"renew unicast", msg(known, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.IPv4(10, 60, 0, 5))), dhcpv4.MessageTypeAck, "10.60.0.5:68"},
		{"wrong address", msg(known, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 60, 0, 6)))), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"other server", msg(known, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 60, 0, 5))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 60, 0, 1)))), dhcpv4.MessageTypeNone, ""},
		{"unknown mac", msg(unknown, dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeNone, ""},
		{"relayed", msg(known, dhcpv4.MessageTypeDiscover, dhcpv4.WithRelay(net.IPv4(10, 0, 0, 1))), dhcpv4.MessageTypeNone, ""},
		{"release", msg(known, dhcpv4.MessageTypeRelease), dhcpv4.MessageTypeNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through the wire format, as the server sees it.
			req, err := dhcpv4.FromBytes(tc.req.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			resp, to := s.reply(req)
			if tc.want == dhcpv4.MessageTypeNone {
				if resp != nil {
					t.Fatalf("answered %s", resp.Summary())
				}
				return
			}
			if resp == nil {
				t.Fatal("no answer")
			}
			if resp.MessageType() != tc.want || to.String() != tc.to || resp.TransactionID != req.TransactionID {
				t.Fatalf("got %s to %s", resp.MessageType(), to)
			}
			if !resp.ServerIdentifier().Equal(gw) {
				t.Fatalf("server id %s", resp.ServerIdentifier())
			}
			if tc.want == dhcpv4.MessageTypeNak {
				return
			}
			checkConfig(t, resp, "10.60.0.5", 24, 1390)
		})
	}
}

// checkConfig asserts the address and network configuration of an answer.
func checkConfig(t *testing.T, resp *dhcpv4.DHCPv4, ip string, prefix, mtu int) {
	t.Helper()
	gw := net.IPv4(169, 254, 1, 1).To4()
	if resp.YourIPAddr.String() != ip {
		t.Errorf("yiaddr %s, want %s", resp.YourIPAddr, ip)
	}
	if ones, _ := resp.SubnetMask().Size(); ones != prefix {
		t.Errorf("mask /%d, want /%d", ones, prefix)
	}
	if r := resp.Router(); len(r) != 1 || !r[0].Equal(gw) {
		t.Errorf("router %v", r)
	}
	if d := resp.DNS(); len(d) != 1 || !d[0].Equal(gw) {
		t.Errorf("dns %v", d)
	}
	routes := resp.ClasslessStaticRoute()
	if len(routes) != 2 || routes[0].String() != "route to 169.254.1.1/32 via 0.0.0.0" || routes[1].String() != "route to 0.0.0.0/0 via 169.254.1.1" {
		t.Errorf("classless routes %v", routes)
	}
	if m := resp.GetOneOption(dhcpv4.OptionInterfaceMTU); len(m) != 2 || int(m[0])<<8|int(m[1]) != mtu {
		t.Errorf("mtu option %v, want %d", m, mtu)
	}
	if lt := resp.IPAddressLeaseTime(0); lt != DefaultLeaseTime {
		t.Errorf("lease %s", lt)
	}
}

func TestSetLeasesRejectsBadLeases(t *testing.T) {
	mac, _ := net.ParseMAC("02:aa:bb:cc:dd:01")
	s := testServer(t)
	for _, l := range []Lease{
		{MAC: mac, IP: netip.MustParseAddr("fd00::1"), PrefixLen: 64},
		{MAC: mac, IP: netip.MustParseAddr("10.0.0.1"), PrefixLen: 0},
		{IP: netip.MustParseAddr("10.0.0.1"), PrefixLen: 24},
	} {
		if err := s.SetLeases([]Lease{l}); err == nil {
			t.Errorf("lease %+v accepted", l)
		}
	}
}
