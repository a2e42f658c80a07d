package netfabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/nodeagent/hostroutes"
)

// linkSnapshot is the node's links, IPv4 addresses and main-table IPv4
// routes, listed once per Reconcile.
type linkSnapshot struct {
	byName map[string]netlink.Link
	addrs  map[int][]netlink.Addr
	routes map[int][]netlink.Route
}

func (f *Fabric) snapshot() (*linkSnapshot, error) {
	links, err := f.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	s := &linkSnapshot{byName: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, routes: map[int][]netlink.Route{}}
	for _, l := range links {
		s.byName[l.Attrs().Name] = l
	}
	addrs, err := f.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		s.addrs[a.LinkIndex] = append(s.addrs[a.LinkIndex], a)
	}
	routes, err := f.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		s.routes[r.LinkIndex] = append(s.routes[r.LinkIndex], r)
	}
	return s, nil
}

func (f *Fabric) reconcileLinks(_ context.Context, p *plan, rep *Report) error {
	s, err := f.snapshot()
	if err != nil {
		return err
	}
	p.links = s.byName
	want := map[string]bool{f.opts.WireGuardIf: true}
	var errs []error
	for i := range p.networks {
		np := &p.networks[i]
		want[np.bridge] = true
		br, err := f.ensureBridge(s, np, rep)
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", np.ID, err))
			continue
		}
		if np.vxlan != "" {
			want[np.vxlan] = true
			if err := f.ensureVXLAN(s, np, br, p.d.TunnelIP.Addr(), rep); err != nil {
				errs = append(errs, fmt.Errorf("network %s: %w", np.ID, err))
			}
		}
	}
	for name, tp := range p.taps {
		want[name] = true
		br := s.byName[tp.bridge]
		if br == nil {
			continue // its network failed above
		}
		if err := f.ensureTap(s, name, tp, br, rep); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: %w", name, err))
		}
	}
	// Remove owned links nobody wants: taps and VXLAN devices before bridges.
	for _, kind := range []string{kindTap, kindVXLAN, kindBridge} {
		for name, l := range s.byName {
			if want[name] || f.ownedKind(name) != kind {
				continue
			}
			if err := f.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
				continue
			}
			rep.add("delete %s %s", l.Type(), name)
		}
	}
	return errors.Join(errs...)
}

// recreate deletes an owned link whose immutable attributes are wrong.
func (f *Fabric) recreate(s *linkSnapshot, l netlink.Link, why string, rep *Report) error {
	name := l.Attrs().Name
	if err := f.nl.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s (%s): %w", name, why, err)
	}
	delete(s.byName, name)
	rep.add("delete %s %s: %s", l.Type(), name, why)
	return nil
}

func (f *Fabric) refresh(s *linkSnapshot, name string) (netlink.Link, error) {
	l, err := f.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	s.byName[name] = l
	return l, nil
}

func (f *Fabric) ensureBridge(s *linkSnapshot, np *netPlan, rep *Report) (netlink.Link, error) {
	l := s.byName[np.bridge]
	if l != nil && l.Type() != "bridge" {
		if err := f.recreate(s, l, "not a bridge", rep); err != nil {
			return nil, err
		}
		l = nil
	}
	if l == nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: np.bridge, MTU: np.MTU, HardwareAddr: np.GatewayMAC}}
		if err := f.nl.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", np.bridge, err)
		}
		rep.add("create bridge %s", np.bridge)
		var err error
		if l, err = f.refresh(s, np.bridge); err != nil {
			return nil, err
		}
		// The gateway MAC is the same on every node: a derived IPv6
		// link-local address would collide across the overlay.
		if err := f.nl.LinkSetIP6AddrGenMode(l, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
			return nil, fmt.Errorf("bridge %s addrgenmode: %w", np.bridge, err)
		}
		if err := f.nl.LinkSetAlias(l, "otherix network "+np.ID+" "+np.Name); err != nil {
			return nil, fmt.Errorf("bridge %s alias: %w", np.bridge, err)
		}
	}
	a := l.Attrs()
	if a.MTU != np.MTU {
		if err := f.nl.LinkSetMTU(l, np.MTU); err != nil {
			return nil, fmt.Errorf("bridge %s mtu: %w", np.bridge, err)
		}
		rep.add("set %s mtu %d", np.bridge, np.MTU)
	}
	if !slices.Equal(a.HardwareAddr, np.GatewayMAC) {
		if err := f.nl.LinkSetHardwareAddr(l, np.GatewayMAC); err != nil {
			return nil, fmt.Errorf("bridge %s mac: %w", np.bridge, err)
		}
		rep.add("set %s mac %s", np.bridge, np.GatewayMAC)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := f.nl.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bridge %s up: %w", np.bridge, err)
		}
		rep.add("set %s up", np.bridge)
	}
	gw := netip.PrefixFrom(GatewayIP, 32)
	if err := f.ensureAddrs(s, l, []netip.Prefix{gw}, rep); err != nil {
		return nil, err
	}
	if err := f.ensureRoute(s, l, np.CIDR, rep); err != nil {
		return nil, err
	}
	return l, nil
}

// ensureAddrs makes want the exact set of IPv4 addresses of an owned link.
func (f *Fabric) ensureAddrs(s *linkSnapshot, l netlink.Link, want []netip.Prefix, rep *Report) error {
	name := l.Attrs().Name
	have := map[netip.Prefix]bool{}
	for _, a := range s.addrs[l.Attrs().Index] {
		p, ok := hostroutes.PrefixOf(a.IPNet)
		if !ok {
			continue
		}
		if !slices.Contains(want, p) {
			if err := f.nl.AddrDel(l, &a); err != nil {
				return fmt.Errorf("%s: delete address %s: %w", name, p, err)
			}
			rep.add("delete address %s from %s", p, name)
			continue
		}
		have[p] = true
	}
	for _, p := range want {
		if have[p] {
			continue
		}
		if err := f.nl.AddrAdd(l, &netlink.Addr{IPNet: prefixIPNet(p)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: add address %s: %w", name, p, err)
		}
		rep.add("add address %s to %s", p, name)
	}
	return nil
}

// ensureRoute makes dst the only main-table IPv4 route through an owned link.
func (f *Fabric) ensureRoute(s *linkSnapshot, l netlink.Link, dst netip.Prefix, rep *Report) error {
	name, idx := l.Attrs().Name, l.Attrs().Index
	found := false
	for _, r := range s.routes[idx] {
		p, ok := hostroutes.PrefixOf(r.Dst)
		if ok && p == dst && r.Scope == netlink.SCOPE_LINK && r.Gw == nil {
			found = true
			continue
		}
		if err := f.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("%s: delete route %v: %w", name, r.Dst, err)
		}
		rep.add("delete route %v dev %s", r.Dst, name)
	}
	if found {
		return nil
	}
	r := &netlink.Route{LinkIndex: idx, Dst: prefixIPNet(dst), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC, Table: unix.RT_TABLE_MAIN}
	if err := f.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("%s: route %s: %w", name, dst, err)
	}
	rep.add("route %s dev %s", dst, name)
	return nil
}

func (f *Fabric) ensureVXLAN(s *linkSnapshot, np *netPlan, br netlink.Link, local netip.Addr, rep *Report) error {
	l := s.byName[np.vxlan]
	if l != nil {
		why := ""
		if vx, ok := l.(*netlink.Vxlan); !ok {
			why = "not a vxlan device"
		} else if vx.VxlanId != int(np.VNI) || vx.Port != VXLANPort || vx.Learning || !vx.SrcAddr.Equal(net.IP(local.AsSlice())) {
			why = "vxlan parameters changed"
		}
		if why != "" {
			if err := f.recreate(s, l, why, rep); err != nil {
				return err
			}
			l = nil
		}
	}
	if l == nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: np.vxlan, MTU: np.MTU},
			VxlanId:   int(np.VNI),
			SrcAddr:   net.IP(local.AsSlice()),
			Port:      VXLANPort,
			Learning:  false,
		}
		if err := f.nl.LinkAdd(vx); err != nil {
			return fmt.Errorf("create vxlan %s: %w", np.vxlan, err)
		}
		rep.add("create vxlan %s vni %d", np.vxlan, np.VNI)
		var err error
		if l, err = f.refresh(s, np.vxlan); err != nil {
			return err
		}
	}
	return f.ensurePort(l, br, np.MTU, rep)
}

// ensurePort sets an owned link's MTU, bridge and up state.
func (f *Fabric) ensurePort(l netlink.Link, br netlink.Link, mtu int, rep *Report) error {
	a := l.Attrs()
	if a.MTU != mtu {
		if err := f.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("%s mtu: %w", a.Name, err)
		}
		rep.add("set %s mtu %d", a.Name, mtu)
	}
	if a.MasterIndex != br.Attrs().Index {
		if err := f.nl.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
			return fmt.Errorf("%s master: %w", a.Name, err)
		}
		rep.add("attach %s to %s", a.Name, br.Attrs().Name)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := f.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s up: %w", a.Name, err)
		}
		rep.add("set %s up", a.Name)
	}
	return nil
}

func (f *Fabric) ensureTap(s *linkSnapshot, name string, tp tapPlan, br netlink.Link, rep *Report) error {
	l := s.byName[name]
	if l != nil {
		if tt, ok := l.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
			if err := f.recreate(s, l, "not a tap", rep); err != nil {
				return err
			}
			l = nil
		}
	}
	if l == nil {
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: tp.mtu},
			Mode:      netlink.TUNTAP_MODE_TAP,
			// Persistent, single queue; QEMU opens it by name with vnet_hdr.
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		// Taps are made through /dev/net/tun, which creates them in the
		// calling thread's namespace.
		if err := inNS(f.ns, func() error { return netlink.LinkAdd(tap) }); err != nil {
			return fmt.Errorf("create tap: %w", err)
		}
		rep.add("create tap %s for vm %s nic %d", name, tp.nic.VMID, tp.nic.Index)
		var err error
		if l, err = f.refresh(s, name); err != nil {
			return err
		}
		if err := f.nl.LinkSetAlias(l, fmt.Sprintf("otherix vm %s nic %d", tp.nic.VMID, tp.nic.Index)); err != nil {
			return fmt.Errorf("alias: %w", err)
		}
	}
	return f.ensurePort(l, br, tp.mtu, rep)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	bits := p.Addr().BitLen()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}
