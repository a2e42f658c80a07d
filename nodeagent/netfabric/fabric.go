package netfabric

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/otherix/otherix/nodeagent/hostroutes"
	"github.com/otherix/otherix/nodeagent/wgtun"
)

// WireGuard implementation choices for Options.WireGuard.
const (
	WireGuardAuto      = "auto"
	WireGuardKernel    = "kernel"
	WireGuardUserspace = "userspace"
)

// Options configure a Fabric.
type Options struct {
	// Netns is the path of the network namespace to manage (for example
	// /var/run/netns/NAME); empty means the namespace of the calling thread
	// when New runs.
	Netns string
	// WireGuard is WireGuardAuto (default), WireGuardKernel or WireGuardUserspace.
	WireGuard string
	// IfPrefix starts every link name Otherix owns: 1 to 4 bytes; default "ox".
	IfPrefix string
	// WireGuardIf names the WireGuard interface; default IfPrefix+"wg0". The
	// userspace UAPI socket /var/run/wireguard/<name>.sock is shared by all
	// namespaces, so nodes sharing a host need distinct names.
	WireGuardIf string
	// KeyDir holds the node's WireGuard private key (<WireGuardIf>.key, 0600),
	// generated on first use. Required.
	KeyDir string
	// Logf receives userspace WireGuard diagnostics; nil discards them.
	Logf func(format string, args ...any)
	// NoTunnelOffload makes userspace WireGuard use wireguard-go's own TUN
	// even where the kernel's TUN takes UDP tunnel GSO (nodeagent/wgtun),
	// which moves VXLAN traffic in 64 KiB batches instead of per packet.
	NoTunnelOffload bool
	// ResolvConf are the resolv.conf files whose nameservers the data
	// plane must never route over; nil means hostroutes.DefaultResolvConf.
	ResolvConf []string
	// HostExtra are more prefixes it must never route over, such as the
	// control plane's address.
	HostExtra []hostroutes.Entry
}

// Fabric converges the data plane of one node. Reconcile calls are
// serialised; a Fabric is safe for concurrent use.
type Fabric struct {
	opts Options
	// ns is the managed namespace, owned (closed by Close).
	ns netns.NsHandle
	// nl is a netlink handle bound to ns.
	nl *netlink.Handle
	// key is the node's WireGuard private key.
	key wgKey

	// mu serialises Reconcile and Close.
	mu sync.Mutex
	// wg is the WireGuard interface state, nil before the first Reconcile
	// that needs it.
	wg *wgState
	// nftOK is the last verified nftables state (see nftgen.go), nil when
	// the next Reconcile must list the rules.
	nftOK *nftVerified
	// closed is set by Close.
	closed bool
}

// New opens the namespace, loads or generates the WireGuard key and returns a
// Fabric. It changes nothing on the node.
func New(opts Options) (*Fabric, error) {
	if opts.IfPrefix == "" {
		opts.IfPrefix = DefaultIfPrefix
	}
	if len(opts.IfPrefix) > 4 {
		return nil, invalidf("interface prefix %q longer than 4 bytes", opts.IfPrefix)
	}
	if opts.WireGuardIf == "" {
		opts.WireGuardIf = opts.IfPrefix + "wg0"
	}
	if len(opts.WireGuardIf) > 15 {
		return nil, invalidf("wireguard interface name %q longer than 15 bytes", opts.WireGuardIf)
	}
	switch opts.WireGuard {
	case "":
		opts.WireGuard = WireGuardAuto
	case WireGuardAuto, WireGuardKernel, WireGuardUserspace:
	default:
		return nil, invalidf("wireguard mode %q", opts.WireGuard)
	}
	if opts.KeyDir == "" {
		return nil, invalidf("no key directory")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	key, err := loadOrCreateKey(opts.KeyDir, opts.WireGuardIf)
	if err != nil {
		return nil, err
	}
	var ns netns.NsHandle
	if opts.Netns == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(opts.Netns)
	}
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", opts.Netns, err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &Fabric{opts: opts, ns: ns, nl: nl, key: key}, nil
}

// WireGuardIf is the name of the WireGuard interface.
func (f *Fabric) WireGuardIf() string { return f.opts.WireGuardIf }

// PublicKey is the node's WireGuard public key (base64). The private key
// stays in Options.KeyDir.
func (f *Fabric) PublicKey() string { return f.key.public() }

// TunnelOffload reports how the userspace WireGuard TUN batched so far; ok
// is false without one that takes UDP tunnel GSO (kernel WireGuard, an older
// kernel, or Options.NoTunnelOffload).
func (f *Fabric) TunnelOffload() (st wgtun.Stats, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wg == nil || f.wg.offload == nil {
		return wgtun.Stats{}, false
	}
	return f.wg.offload.Stats(), true
}

// Close stops a userspace WireGuard device (its TUN interface goes with it)
// and releases the namespace. Bridges, taps, VXLAN devices, a kernel
// WireGuard interface and the nftables tables stay in place.
func (f *Fabric) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var err error
	if f.wg != nil {
		err = f.wg.close()
		f.wg = nil
	}
	f.nl.Close()
	f.ns.Close()
	return err
}

// Reconcile converges the node to d. It applies what it can and returns the
// first error; a later call with the same d picks up where it stopped.
// First it checks every address and route d would install against what the
// host already uses (hostroutes): on any overlap it returns a
// *HostConflictError (ErrHostConflict) and changes nothing.
func (f *Fabric) Reconcile(ctx context.Context, d Desired) (Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rep Report
	if f.closed {
		return rep, ErrClosed
	}
	pl, err := f.plan(d)
	if err != nil {
		return rep, err
	}
	if err := f.checkHost(pl, &rep); err != nil {
		return rep, err
	}
	steps := []struct {
		name string
		fn   func(context.Context, *plan, *Report) error
	}{
		{"sysctl", f.reconcileSysctl},
		{"wireguard", f.reconcileWireGuard},
		{"links", f.reconcileLinks},
		{"fdb", f.reconcileFDB},
		{"nftables", f.reconcileNftables},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if err := s.fn(ctx, pl, &rep); err != nil {
			return rep, fmt.Errorf("reconcile %s: %w", s.name, err)
		}
	}
	return rep, nil
}

func (f *Fabric) reconcileSysctl(_ context.Context, p *plan, rep *Report) error {
	if len(p.networks) == 0 {
		return nil
	}
	changed, err := writeSysctl(f.ns, "/proc/sys/net/ipv4/ip_forward", "1")
	if changed {
		rep.add("enable ipv4 forwarding")
	}
	return err
}

// plan is Desired validated and indexed, with link names resolved.
type plan struct {
	d        Desired
	networks []netPlan
	byID     map[string]*netPlan
	taps     map[string]tapPlan
	peers    []Peer
	// links is the link snapshot reconcileLinks leaves for later steps.
	links map[string]netlink.Link
}

type netPlan struct {
	Network
	bridge string
	vxlan  string // "" for local networks
	// fdb holds "mac|ip" keys of static and flood entries.
	fdb map[string]fdbKey
}

type fdbKey struct {
	mac    string
	remote netip.Addr
}

type tapPlan struct {
	nic    NIC
	bridge string
	mtu    int
}

func (f *Fabric) plan(d Desired) (*plan, error) {
	p := &plan{d: d, byID: map[string]*netPlan{}, taps: map[string]tapPlan{}, peers: d.Peers}
	if d.TunnelIP.IsValid() && !d.TunnelIP.Addr().Is4() {
		return nil, invalidf("tunnel ip %s is not IPv4", d.TunnelIP)
	}
	if p.d.WireGuardMTU == 0 {
		p.d.WireGuardMTU = DefaultWireGuardMTU
	}
	if p.d.WireGuardMTU < 1280 || p.d.WireGuardMTU > maxMTU {
		return nil, invalidf("wireguard mtu %d", p.d.WireGuardMTU)
	}
	bridges := map[string]string{}
	for _, n := range d.Networks {
		if n.ID == "" {
			return nil, invalidf("network without id")
		}
		if _, dup := p.byID[n.ID]; dup {
			return nil, invalidf("network %s listed twice", n.ID)
		}
		if !n.CIDR.IsValid() || !n.CIDR.Addr().Is4() {
			return nil, invalidf("network %s: cidr %s is not IPv4", n.ID, n.CIDR)
		}
		n.CIDR = n.CIDR.Masked()
		if n.MTU == 0 {
			n.MTU = DefaultOverlayMTU
		}
		if n.MTU < 576 || n.MTU > maxMTU {
			return nil, invalidf("network %s: mtu %d", n.ID, n.MTU)
		}
		if n.Type == TypeOverlay && n.MTU > p.d.WireGuardMTU-vxlanOverhead {
			// Larger frames would leave VXLAN fragmented inside WireGuard.
			return nil, invalidf("network %s: mtu %d above the overlay's %d (wireguard mtu %d)",
				n.ID, n.MTU, p.d.WireGuardMTU-vxlanOverhead, p.d.WireGuardMTU)
		}
		if n.GatewayMAC == nil {
			n.GatewayMAC = GatewayMACFor(n.ID)
		}
		if len(n.GatewayMAC) != 6 {
			return nil, invalidf("network %s: gateway mac %s", n.ID, n.GatewayMAC)
		}
		np := netPlan{Network: n, bridge: f.bridgeName(n.ID), fdb: map[string]fdbKey{}}
		if other, clash := bridges[np.bridge]; clash {
			return nil, invalidf("networks %s and %s hash to the same link name", other, n.ID)
		}
		bridges[np.bridge] = n.ID
		switch n.Type {
		case TypeLocal:
		case TypeOverlay:
			if n.VNI == 0 || n.VNI >= 1<<24 {
				return nil, invalidf("network %s: vni %d", n.ID, n.VNI)
			}
			if !d.TunnelIP.IsValid() {
				return nil, invalidf("overlay network %s without a tunnel ip", n.ID)
			}
			np.vxlan = f.vxlanName(n.ID)
		default:
			return nil, invalidf("network %s: type %q", n.ID, n.Type)
		}
		p.networks = append(p.networks, np)
	}
	for i := range p.networks {
		p.byID[p.networks[i].ID] = &p.networks[i]
	}
	zero := "00:00:00:00:00:00"
	for _, e := range d.FDB {
		np := p.byID[e.Network]
		if np == nil || np.vxlan == "" {
			continue // not an overlay network of this node: nothing to forward to
		}
		if !e.Remote.Is4() {
			return nil, invalidf("fdb entry for %s: remote %s", e.Network, e.Remote)
		}
		mac := zero
		if len(e.MAC) != 0 {
			if len(e.MAC) != 6 {
				return nil, invalidf("fdb entry for %s: mac %s", e.Network, e.MAC)
			}
			mac = e.MAC.String()
		}
		k := fdbKey{mac: mac, remote: e.Remote}
		np.fdb[k.mac+"|"+k.remote.String()] = k
		// Every node hosting a VM of the network also gets BUM frames.
		fk := fdbKey{mac: zero, remote: e.Remote}
		np.fdb[fk.mac+"|"+fk.remote.String()] = fk
	}
	for _, nic := range d.NICs {
		np := p.byID[nic.Network]
		if np == nil {
			return nil, invalidf("nic %s/%d: unknown network %s", nic.VMID, nic.Index, nic.Network)
		}
		name := f.TapName(nic)
		if _, dup := p.taps[name]; dup {
			return nil, invalidf("nic %s/%d listed twice", nic.VMID, nic.Index)
		}
		p.taps[name] = tapPlan{nic: nic, bridge: np.bridge, mtu: np.MTU}
	}
	return p, nil
}
