package overlay

import (
	"bytes"
	"log/slog"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/otherix/otherix/nodeagent/dhcpd"
	"github.com/otherix/otherix/nodeagent/dnsfwd"
	"github.com/otherix/otherix/nodeagent/netfabric"
)

// Services are the guest-facing services that run next to the fabric.
type Services interface {
	// Sync follows a successful reconcile with the state it applied.
	Sync(d netfabric.Desired)
	// Close stops every service; a later Sync does nothing.
	Close()
}

var _ Services = (*NodeServices)(nil)

// NodeServicesConfig configures NodeServices.
type NodeServicesConfig struct {
	// Netns is the path of the fabric's namespace (empty: the process's).
	Netns string
	// ResolvConf names the node's upstream resolvers (empty: dnsfwd's
	// default).
	ResolvConf string
	// Log receives failures; nil discards them.
	Log *slog.Logger
}

// NodeServices runs the DNS forwarder on 169.254.1.1:53 once a network is
// on the node, and a DHCP responder on each network bridge serving the
// NICs of that network.
type NodeServices struct {
	cfg NodeServicesConfig

	// mu guards the fields below it.
	mu     sync.Mutex
	dns    *dnsfwd.Forwarder
	dhcp   map[string]*responder
	closed bool
}

// responder is the DHCP server of one network and the bridge it is bound
// to (by index: a recreated bridge needs a new socket).
type responder struct {
	srv   *dhcpd.Server
	index int
}

// NewNodeServices returns services that start at the first Sync.
func NewNodeServices(cfg NodeServicesConfig) *NodeServices {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &NodeServices{cfg: cfg, dhcp: map[string]*responder{}}
}

// Sync starts what is missing, updates the DHCP tables and stops the
// responders of networks that left the node. Failures are logged and
// retried at the next Sync.
func (s *NodeServices) Sync(d netfabric.Desired) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if len(d.Networks) > 0 && s.dns == nil {
		fw, err := dnsfwd.Start(dnsfwd.Config{Netns: s.cfg.Netns, ResolvConf: s.cfg.ResolvConf, Log: s.cfg.Log})
		if err != nil {
			s.cfg.Log.Warn("overlay: dns forwarder", "err", err)
		} else {
			s.dns = fw
		}
	}
	bridges, err := s.bridges()
	if err != nil {
		s.cfg.Log.Warn("overlay: list bridges for dhcp", "err", err)
		return
	}
	want := map[string]bool{}
	for _, nw := range d.Networks {
		want[nw.ID] = true
		mac := nw.GatewayMAC
		if mac == nil {
			mac = netfabric.GatewayMACFor(nw.ID)
		}
		var br netlink.Link
		for _, l := range bridges {
			if bytes.Equal(l.Attrs().HardwareAddr, mac) {
				br = l
			}
		}
		r := s.dhcp[nw.ID]
		if r != nil && (br == nil || br.Attrs().Index != r.index) {
			r.srv.Close()
			delete(s.dhcp, nw.ID)
			r = nil
		}
		if br == nil {
			continue
		}
		leases := leasesOf(d, nw)
		if r != nil {
			if err := r.srv.SetLeases(leases); err != nil {
				s.cfg.Log.Warn("overlay: dhcp leases", "network", nw.ID, "err", err)
			}
			continue
		}
		srv, err := dhcpd.Start(dhcpd.Config{Interface: br.Attrs().Name, Netns: s.cfg.Netns, Log: s.cfg.Log}, leases)
		if err != nil {
			s.cfg.Log.Warn("overlay: dhcp responder", "network", nw.ID, "bridge", br.Attrs().Name, "err", err)
			continue
		}
		s.dhcp[nw.ID] = &responder{srv: srv, index: br.Attrs().Index}
	}
	for id, r := range s.dhcp {
		if !want[id] {
			r.srv.Close()
			delete(s.dhcp, id)
		}
	}
}

// Close stops the forwarder and every responder.
func (s *NodeServices) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.dns != nil {
		s.dns.Close()
		s.dns = nil
	}
	for id, r := range s.dhcp {
		r.srv.Close()
		delete(s.dhcp, id)
	}
}

// bridges lists the bridges of the fabric's namespace.
func (s *NodeServices) bridges() ([]netlink.Link, error) {
	var ns netns.NsHandle
	var err error
	if s.cfg.Netns == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(s.cfg.Netns)
	}
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var out []netlink.Link
	for _, l := range links {
		if l.Type() == "bridge" {
			out = append(out, l)
		}
	}
	return out, nil
}

// leasesOf are the DHCP leases of nw's NICs.
func leasesOf(d netfabric.Desired, nw netfabric.Network) []dhcpd.Lease {
	mtu := nw.MTU
	if mtu == 0 {
		mtu = netfabric.DefaultOverlayMTU
	}
	var out []dhcpd.Lease
	for _, n := range d.NICs {
		if n.Network == nw.ID && n.IP.Is4() && len(n.MAC) == 6 {
			out = append(out, dhcpd.Lease{MAC: n.MAC, IP: n.IP, PrefixLen: nw.CIDR.Bits(), MTU: mtu})
		}
	}
	return out
}
