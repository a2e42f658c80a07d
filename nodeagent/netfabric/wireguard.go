package netfabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/otherix/otherix/nodeagent/wgtun"
)

// keepalive keeps NAT mappings and the peer's endpoint fresh.
const keepalive = 25 * time.Second

// wgState is a running WireGuard interface and its control client.
type wgState struct {
	// impl is WireGuardKernel or WireGuardUserspace.
	impl string
	// name is the interface name.
	name string
	// client configures the device (genetlink or the UAPI socket).
	client *wgctrl.Client
	// dev, uapi and done belong to a userspace device only; offload is its
	// TUN when that takes UDP tunnel GSO, else nil.
	dev     *device.Device
	offload *wgtun.Device
	uapi    net.Listener
	done    sync.WaitGroup
}

func (w *wgState) close() error {
	var errs []error
	if w.uapi != nil {
		errs = append(errs, w.uapi.Close())
	}
	if w.dev != nil {
		w.dev.Close() // closes the TUN: the interface disappears
	}
	w.done.Wait()
	if w.uapi != nil {
		// A listener made from a file does not unlink its socket.
		os.Remove(filepath.Join("/var/run/wireguard", w.name+".sock"))
	}
	if w.client != nil {
		errs = append(errs, w.client.Close())
	}
	return errors.Join(errs...)
}

func (f *Fabric) reconcileWireGuard(_ context.Context, p *plan, rep *Report) error {
	name := f.opts.WireGuardIf
	l, _ := f.nl.LinkByName(name)
	if !p.d.TunnelIP.IsValid() {
		if f.wg != nil {
			f.wg.close()
			f.wg = nil
			rep.add("stop wireguard %s", name)
		}
		if l, err := f.nl.LinkByName(name); err == nil {
			if err := f.nl.LinkDel(l); err != nil {
				return fmt.Errorf("delete %s: %w", name, err)
			}
			rep.add("delete wireguard %s", name)
		}
		return nil
	}
	// A userspace device whose interface vanished is dead: start over.
	if f.wg != nil && (l == nil || (f.wg.impl == WireGuardKernel) != (l.Type() == "wireguard")) {
		f.wg.close()
		f.wg = nil
	}
	if f.wg == nil {
		w, err := f.startWireGuard(l, rep)
		if err != nil {
			return err
		}
		f.wg = w
		if l, err = f.nl.LinkByName(name); err != nil {
			return fmt.Errorf("get %s: %w", name, err)
		}
	}
	rep.WireGuard = f.wg.impl
	rep.TunnelOffload = f.wg.offload != nil
	if err := f.configureWireGuard(p, rep); err != nil {
		return err
	}
	if mtu := p.d.WireGuardMTU; l.Attrs().MTU != mtu {
		if err := f.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("%s mtu: %w", name, err)
		}
		rep.add("set %s mtu %d", name, mtu)
		if f.wg.offload != nil {
			f.wg.offload.MTUChanged()
		}
	}
	s := &linkSnapshot{addrs: map[int][]netlink.Addr{}}
	addrs, err := f.nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("%s addresses: %w", name, err)
	}
	s.addrs[l.Attrs().Index] = addrs
	if err := f.ensureAddrs(s, l, []netip.Prefix{p.d.TunnelIP}, rep); err != nil {
		return err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := f.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s up: %w", name, err)
		}
		rep.add("set %s up", name)
	}
	return nil
}

// startWireGuard adopts or creates the interface. existing is the link of
// that name, if any.
func (f *Fabric) startWireGuard(existing netlink.Link, rep *Report) (*wgState, error) {
	name := f.opts.WireGuardIf
	mode := f.opts.WireGuard
	if existing != nil && existing.Type() == "wireguard" && mode != WireGuardUserspace {
		return f.newWGClient(&wgState{impl: WireGuardKernel, name: name})
	}
	if existing != nil {
		// A TUN left by a userspace device this Fabric does not run, or a
		// kernel interface when userspace is forced.
		if err := f.nl.LinkDel(existing); err != nil {
			return nil, fmt.Errorf("delete stale %s: %w", name, err)
		}
		rep.add("delete stale %s %s", existing.Type(), name)
	}
	if mode != WireGuardUserspace {
		err := f.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: DefaultWireGuardMTU}})
		if err == nil {
			rep.add("create kernel wireguard %s", name)
			return f.newWGClient(&wgState{impl: WireGuardKernel, name: name})
		}
		if mode == WireGuardKernel {
			return nil, fmt.Errorf("%w: kernel: %v", ErrNoWireGuard, err)
		}
	}
	w, err := f.startUserspace()
	if err != nil {
		return nil, err
	}
	rep.add("start userspace wireguard %s", name)
	return f.newWGClient(w)
}

// newWGClient opens wgctrl inside the namespace: its generic netlink socket
// (kernel devices) binds to the namespace it is created in.
func (f *Fabric) newWGClient(w *wgState) (*wgState, error) {
	err := inNS(f.ns, func() error {
		c, err := wgctrl.New()
		w.client = c
		return err
	})
	if err != nil {
		w.close()
		return nil, fmt.Errorf("wgctrl: %w", err)
	}
	return w, nil
}

// startUserspace runs wireguard-go with its TUN device in the namespace and
// its UAPI socket in /var/run/wireguard.
func (f *Fabric) startUserspace() (*wgState, error) {
	name := f.opts.WireGuardIf
	w := &wgState{impl: WireGuardUserspace, name: name}
	var tdev tun.Device
	err := inNS(f.ns, func() error {
		// The TUN, its netlink event socket and the initial MTU query all
		// bind to this thread's namespace.
		var err error
		if !f.opts.NoTunnelOffload {
			w.offload, err = wgtun.Create(name)
			if err == nil {
				tdev = w.offload
			} else if !errors.Is(err, wgtun.ErrUnsupported) {
				return err
			}
		}
		if tdev == nil {
			if tdev, err = tun.CreateTUN(name, DefaultWireGuardMTU); err != nil {
				return err
			}
		}
		logf := f.opts.Logf
		logger := &device.Logger{
			Verbosef: device.DiscardLogf,
			Errorf:   func(format string, args ...any) { logf("wireguard "+name+": "+format, args...) },
		}
		w.dev = device.NewDevice(&nsTUN{Device: tdev, ns: f.ns}, &nsBind{Bind: conn.NewDefaultBind(), ns: f.ns}, logger)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: userspace tun %s: %v", ErrNoWireGuard, name, err)
	}
	file, err := ipc.UAPIOpen(name)
	if err != nil {
		w.close()
		return nil, fmt.Errorf("uapi socket %s: %w", name, err)
	}
	w.uapi, err = ipc.UAPIListen(name, file)
	file.Close()
	if err != nil {
		w.close()
		return nil, fmt.Errorf("uapi listen %s: %w", name, err)
	}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for {
			c, err := w.uapi.Accept()
			if err != nil {
				return // listener closed by wgState.close
			}
			w.done.Add(1)
			go func() {
				defer w.done.Done()
				w.dev.IpcHandle(c) // returns when the client hangs up
			}()
		}
	}()
	return w, nil
}

// nsBind opens wireguard-go's UDP sockets inside the node's namespace:
// wireguard-go (re)opens them from its own goroutines, which run in the
// process's namespace.
type nsBind struct {
	conn.Bind
	ns netns.NsHandle
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = inNS(b.ns, func() error {
		var oerr error
		fns, actual, oerr = b.Bind.Open(port)
		return oerr
	})
	return fns, actual, err
}

var _ conn.Bind = (*nsBind)(nil)

// nsTUN reads the TUN's MTU inside the node's namespace: wireguard-go asks
// by interface name through a fresh socket whenever the link changes, from a
// goroutine in the process's namespace, where the name does not exist.
type nsTUN struct {
	tun.Device
	ns netns.NsHandle
}

func (t *nsTUN) MTU() (mtu int, err error) {
	err = inNS(t.ns, func() error {
		var merr error
		mtu, merr = t.Device.MTU()
		return merr
	})
	return mtu, err
}

var _ tun.Device = (*nsTUN)(nil)

// configureWireGuard sets the key, port and peers, touching only what differs.
func (f *Fabric) configureWireGuard(p *plan, rep *Report) error {
	name := f.opts.WireGuardIf
	cur, err := f.wg.client.Device(name)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	port := p.d.ListenPort
	if port == 0 {
		port = DefaultListenPort
	}
	cfg := wgtypes.Config{}
	if cur.PrivateKey != f.key.priv {
		cfg.PrivateKey = &f.key.priv
		rep.add("set %s private key", name)
	}
	if cur.ListenPort != port {
		cfg.ListenPort = &port
		rep.add("set %s listen port %d", name, port)
	}
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, pe := range cur.Peers {
		have[pe.PublicKey] = pe
	}
	want := map[wgtypes.Key]bool{}
	for _, pe := range p.peers {
		k, err := wgtypes.ParseKey(pe.PublicKey)
		if err != nil {
			return invalidf("peer key %q: %v", pe.PublicKey, err)
		}
		if k == f.key.priv.PublicKey() {
			continue // this node itself
		}
		if !pe.TunnelIP.Is4() {
			return invalidf("peer %s: tunnel ip %s", pe.PublicKey, pe.TunnelIP)
		}
		want[k] = true
		allowed := net.IPNet{IP: net.IP(pe.TunnelIP.AsSlice()), Mask: net.CIDRMask(32, 32)}
		var ep *net.UDPAddr
		if pe.Endpoint.IsValid() {
			ep = net.UDPAddrFromAddrPort(pe.Endpoint)
		}
		if h, ok := have[k]; ok && peerMatches(h, ep, allowed) {
			continue
		}
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{
			PublicKey:                   k,
			Endpoint:                    ep,
			PersistentKeepaliveInterval: ptr(keepalive),
			ReplaceAllowedIPs:           true,
			AllowedIPs:                  []net.IPNet{allowed},
		})
		rep.add("set %s peer %s endpoint %s allowed %s", name, pe.PublicKey, pe.Endpoint, pe.TunnelIP)
	}
	for k := range have {
		if !want[k] {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
			rep.add("remove %s peer %s", name, k)
		}
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(cfg.Peers) == 0 {
		return nil
	}
	if err := f.wg.client.ConfigureDevice(name, cfg); err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	return nil
}

func peerMatches(h wgtypes.Peer, ep *net.UDPAddr, allowed net.IPNet) bool {
	if (h.Endpoint == nil) != (ep == nil) {
		return false
	}
	if ep != nil && unmapAP(h.Endpoint.AddrPort()) != unmapAP(ep.AddrPort()) {
		return false
	}
	if h.PersistentKeepaliveInterval != keepalive || len(h.AllowedIPs) != 1 {
		return false
	}
	a := h.AllowedIPs[0]
	return a.IP.Equal(allowed.IP) && slices.Equal(a.Mask, allowed.Mask)
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func ptr[T any](v T) *T { return &v }
