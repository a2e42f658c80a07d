package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/hostroutes"
	"github.com/otherix/otherix/nodeagent/netfabric"
	"github.com/otherix/otherix/nodeagent/overlay"
)

// Values of --data-plane.
const (
	dataPlaneAuto = "auto"
	dataPlaneOn   = "on"
	dataPlaneOff  = "off"
)

// dataPlaneOptions are serve's data plane flags.
type dataPlaneOptions struct {
	mode, wireguard, underlayIP, wireguardIf string
	wireguardPort                            int
	tunnelOffload                            bool
}

// enabled says whether the data plane runs: auto means when root, since
// bridges, taps and nftables need CAP_NET_ADMIN.
func (o dataPlaneOptions) enabled() (bool, error) {
	switch o.mode {
	case dataPlaneOn:
		return true, nil
	case dataPlaneOff:
		return false, nil
	case dataPlaneAuto, "":
		return os.Geteuid() == 0, nil
	}
	return false, fmt.Errorf("--data-plane must be auto, on or off, got %q", o.mode)
}

func (o dataPlaneOptions) validate() error {
	if _, err := o.enabled(); err != nil {
		return err
	}
	switch o.wireguard {
	case netfabric.WireGuardAuto, netfabric.WireGuardKernel, netfabric.WireGuardUserspace:
	default:
		return fmt.Errorf("--wireguard must be auto, kernel or userspace, got %q", o.wireguard)
	}
	if o.wireguardPort < 1 || o.wireguardPort > 65535 {
		return fmt.Errorf("--wireguard-port %d out of range", o.wireguardPort)
	}
	if o.underlayIP != "" {
		if a, err := netip.ParseAddr(o.underlayIP); err != nil || !a.Is4() {
			return fmt.Errorf("--underlay-ip %q is not an IPv4 address", o.underlayIP)
		}
	}
	return nil
}

// dataPlane is the node's running data plane: the fabric, its runner and
// the goroutine that owns the runner's loop.
type dataPlane struct {
	fabric *netfabric.Fabric
	runner *overlay.Runner
	cancel context.CancelFunc
	done   chan struct{}
	// wake asks the heartbeat loop for a beat now; set once the loop
	// exists (see setWake).
	wake atomic.Pointer[func()]
}

// setWake connects the runner's need for a fresh desired state to the
// heartbeat loop.
func (dp *dataPlane) setWake(f func()) {
	if dp != nil {
		dp.wake.Store(&f)
	}
}

// startDataPlane opens the fabric (loading or generating the WireGuard key
// under the state dir) and starts the reconcile loop. nics lists the NICs
// of the node's VMs; it is called only once a desired state has arrived.
func startDataPlane(ctx context.Context, log *slog.Logger, o dataPlaneOptions, stateDir, server string, replicas []string,
	nics func() map[string][]messages.NICStatus) (*dataPlane, error) {
	ip := o.underlayIP
	if ip == "" {
		a, err := hostTowards(server)
		if err != nil {
			return nil, fmt.Errorf("underlay address (set --underlay-ip): %w", err)
		}
		ip = a
	}
	underlay, err := netip.ParseAddr(ip)
	if err != nil || !underlay.Is4() {
		return nil, fmt.Errorf("underlay address %q is not IPv4 (set --underlay-ip)", ip)
	}
	dp := &dataPlane{}
	fab, err := netfabric.New(netfabric.Options{
		// The data plane must never route the control plane's address
		// into the mesh: the node would lose its heartbeats.
		HostExtra:       controlPlaneEntries(ctx, log, replicas),
		WireGuard:       o.wireguard,
		WireGuardIf:     o.wireguardIf,
		NoTunnelOffload: !o.tunnelOffload,
		KeyDir:          filepath.Join(stateDir, "wireguard"),
		Logf: func(format string, args ...any) {
			log.Debug("wireguard: " + fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("network data plane: %w", err)
	}
	r, err := overlay.New(overlay.Config{Fabric: fab, UnderlayIP: underlay, ListenPort: o.wireguardPort,
		WireGuard: o.wireguard, NICs: nics, Log: log,
		// DNS on 169.254.1.1 and DHCP on each bridge, for guests with or
		// without cloud-init.
		Services: overlay.NewNodeServices(overlay.NodeServicesConfig{Log: log}),
		Wake: func() {
			if f := dp.wake.Load(); f != nil {
				(*f)()
			}
		}})
	if err != nil {
		fab.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	dp.fabric, dp.runner, dp.cancel, dp.done = fab, r, cancel, make(chan struct{})
	go func() {
		defer close(dp.done)
		_ = r.Run(rctx)
	}()
	log.Info("network data plane on", "public_key", fab.PublicKey(), "endpoint", r.Status().Endpoint,
		"wireguard", o.wireguard)
	return dp, nil
}

// close stops the reconcile loop, then the fabric: a userspace WireGuard
// device stops with the agent; bridges, taps and rules stay for the VMs.
func (dp *dataPlane) close(log *slog.Logger) {
	dp.cancel()
	<-dp.done
	if err := dp.fabric.Close(); err != nil {
		log.Warn("close network data plane", "err", err)
	}
}

// hostTowards is the address this host uses towards server's host: a UDP
// "dial" sends nothing, it only asks the kernel for the source address.
func hostTowards(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	sp := u.Port()
	if sp == "" {
		sp = "443"
	}
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), sp))
	if err != nil {
		return "", fmt.Errorf("find this host's address towards %s: %w", server, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// controlPlaneEntries are the addresses of the control plane's replicas
// the agent knows at start (see enroll.State.Servers), which the data plane
// must not route over. A name is resolved once, at start; when it cannot
// be, the check goes on without it (the routes towards it are checked
// anyway). Replicas learned later are not added.
func controlPlaneEntries(ctx context.Context, log *slog.Logger, servers []string) []hostroutes.Entry {
	var out []hostroutes.Entry
	seen := map[netip.Addr]bool{}
	for _, server := range servers {
		u, err := url.Parse(server)
		if err != nil {
			continue
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			addrs = append(addrs, a)
		} else {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ips, err := net.DefaultResolver.LookupNetIP(lctx, "ip4", u.Hostname())
			cancel()
			if err != nil {
				log.Warn("resolve the control plane for the host route check", "server", server, "err", err)
			}
			addrs = append(addrs, ips...)
		}
		for _, a := range addrs {
			if a = a.Unmap(); a.Is4() && !seen[a] {
				seen[a] = true
				out = append(out, hostroutes.Entry{Prefix: netip.PrefixFrom(a, 32), Source: "control plane"})
			}
		}
	}
	return out
}

// hostPrefixes is what the heartbeat reports the host uses; nil without a
// data plane.
func (dp *dataPlane) hostPrefixes() []messages.HostPrefix {
	if dp == nil {
		return nil
	}
	return dp.runner.HostPrefixes()
}

// status is the heartbeat's overlay; nil without a data plane.
func (dp *dataPlane) status() *messages.NodeOverlay {
	if dp == nil {
		return nil
	}
	s := dp.runner.Status()
	return &s
}

// revision is the desired overlay's revision held, for the heartbeat.
func (dp *dataPlane) revision() string {
	if dp == nil {
		return ""
	}
	return dp.runner.Revision()
}

// setDesired hands a heartbeat answer's desired state to the runner.
func (dp *dataPlane) setDesired(d messages.DesiredState) {
	if dp != nil {
		dp.runner.SetDesired(d)
	}
}
