package dhcpd

import (
	"encoding/binary"
	"net"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// clientAddr is where replies to a client without an address go.
var clientBroadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}

// reply computes the answer to req and where to send it; nil means no
// answer (an unknown MAC, a relayed request, a request for another server,
// a message type the responder does not handle).
func (s *Server) reply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, nil
	}
	if !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil {
		return nil, nil // VMs sit on the bridge; a relay is not ours to answer
	}
	s.mu.Lock()
	lease, ok := s.leases[strings.ToLower(req.ClientHWAddr.String())]
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	sid := net.IP(s.cfg.ServerIP.AsSlice())
	ip := net.IP(lease.IP.AsSlice())
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		if id := req.ServerIdentifier(); id != nil && !id.Equal(sid) {
			return nil, nil // the client chose another server
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		if !want.Equal(ip) {
			nak, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)))
			if err != nil {
				return nil, nil
			}
			return nak, clientBroadcast
		}
		typ = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(ip),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.cfg.LeaseTime)),
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(s.cfg.LeaseTime / 2)),
		dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(s.cfg.LeaseTime * 7 / 8)),
	}, s.config(lease)...)...)
	if err != nil {
		return nil, nil
	}
	// A renewing client has its address and answers ARP: unicast to it.
	if typ == dhcpv4.MessageTypeAck && req.ClientIPAddr != nil && req.ClientIPAddr.Equal(ip) {
		return resp, &net.UDPAddr{IP: ip, Port: dhcpv4.ClientPort}
	}
	return resp, clientBroadcast
}

// config is the network configuration of a lease. 169.254.1.1 is outside
// every subnet, so the classless static routes (option 121) make it
// on-link before routing the default through it; a client that ignores 121
// gets the router option and must cope (Linux clients install it on-link
// when the gateway is not in the subnet).
func (s *Server) config(l Lease) []dhcpv4.Modifier {
	gw := net.IP(s.cfg.ServerIP.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
		dhcpv4.WithNetmask(net.CIDRMask(l.PrefixLen, 32)),
		dhcpv4.WithRouter(gw),
		dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
			&dhcpv4.Route{Dest: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Router: net.IPv4zero.To4()},
			&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: gw},
		)),
		dhcpv4.WithDNS(gw),
	}
	if l.MTU > 0 {
		mtu := make([]byte, 2)
		binary.BigEndian.PutUint16(mtu, uint16(l.MTU))
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, mtu))
	}
	return mods
}
