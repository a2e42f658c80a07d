// Package overlay runs the node's data plane for the agent: it turns the
// desired overlay the control plane sends in each heartbeat answer, plus the
// NICs of the VMs this node runs, into netfabric.Desired, converges the
// node to it off the heartbeat goroutine (the latest desired state wins),
// makes the taps of a VM synchronously before its QEMU starts, and reports
// how the last reconcile went for the next heartbeat.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/netfabric"
)

// Fabric is what the runner needs of a netfabric.Fabric.
type Fabric interface {
	Reconcile(ctx context.Context, d netfabric.Desired) (netfabric.Report, error)
	PublicKey() string
	TapName(nic netfabric.NIC) string
}

var _ Fabric = (*netfabric.Fabric)(nil)

// Defaults of a Config whose fields are zero.
const (
	// DefaultNetworkWait is how long EnsureNICs waits for the control plane
	// to put a VM's network on this node (it arrives with a heartbeat).
	DefaultNetworkWait = 45 * time.Second
	// DefaultReconcileTimeout bounds one reconcile.
	DefaultReconcileTimeout = 30 * time.Second
	// wakeEvery spaces the heartbeats EnsureNICs asks for while it waits.
	wakeEvery = 2 * time.Second
	// maxLoggedActions bounds the actions one log line lists.
	maxLoggedActions = 20
)

// Config configures a Runner.
type Config struct {
	// Fabric converges the node. Required.
	Fabric Fabric
	// UnderlayIP is the address peers reach this node's WireGuard at.
	UnderlayIP netip.Addr
	// ListenPort is the WireGuard port reported and used while the desired
	// state names none (0: netfabric.DefaultListenPort).
	ListenPort int
	// WireGuard is the requested implementation (auto, kernel or
	// userspace); it is reported until a reconcile names the one in use.
	WireGuard string
	// NICs lists the NICs of every VM this node holds, by VM id. Required:
	// a reconcile removes the taps of VMs it does not list.
	NICs func() map[string][]messages.NICStatus
	// NetworkWait is how long EnsureNICs waits for a VM's network to be
	// in the desired state (0: DefaultNetworkWait).
	NetworkWait time.Duration
	// ReconcileTimeout bounds one reconcile (0: DefaultReconcileTimeout).
	ReconcileTimeout time.Duration
	// Wake, if set, asks for a heartbeat now: EnsureNICs calls it while it
	// waits for a network the control plane has not sent yet.
	Wake func()
	// Services, if set, follow each successful reconcile (the DNS
	// forwarder, DHCP responders: NewNodeServices) and are closed when Run
	// returns.
	Services Services
	// Log receives changes and failures; nil discards them.
	Log *slog.Logger
}

// Runner owns the node's data plane reconciles. Create it with New, call
// Run in a goroutine the caller owns, feed it with SetDesired.
type Runner struct {
	cfg Config
	// kick wakes Run; one pending kick is enough since a reconcile always
	// uses the latest desired state.
	kick chan struct{}

	// mu guards the fields below it.
	mu sync.Mutex
	// desired is the latest desired state without NICs; nil until the
	// control plane sent one.
	desired *netfabric.Desired
	// revision is the control plane's revision of desired; the heartbeat
	// reports it so an unchanged overlay is not sent again.
	revision string
	// arrived is closed (and replaced) when a new desired state arrives.
	arrived chan struct{}
	// pinned holds the NICs of VMs EnsureNICs was asked for, until
	// ReleaseNICs: a VM being created is not yet in cfg.NICs.
	pinned map[string][]messages.NICStatus
	// impl, offload, reconciled and lastErr are what the next heartbeat
	// reports.
	impl       string
	offload    bool
	reconciled bool
	lastErr    string
	// conflicts are the host collisions the last reconcile refused over,
	// hostPrefixes what it found the host uses; both for the heartbeat.
	conflicts    []messages.HostConflict
	hostPrefixes []messages.HostPrefix
	// loggedErr is the last error logged, so a repeat is not logged again.
	loggedErr string

	// recMu serialises building a desired state and applying it, so a
	// reconcile never applies a NIC set older than one already applied.
	recMu sync.Mutex
}

// New returns a Runner; it changes nothing until a desired state arrives.
func New(cfg Config) (*Runner, error) {
	if cfg.Fabric == nil || cfg.NICs == nil {
		return nil, errors.New("overlay: Config needs Fabric and NICs")
	}
	if cfg.ListenPort <= 0 {
		cfg.ListenPort = netfabric.DefaultListenPort
	}
	if cfg.NetworkWait <= 0 {
		cfg.NetworkWait = DefaultNetworkWait
	}
	if cfg.ReconcileTimeout <= 0 {
		cfg.ReconcileTimeout = DefaultReconcileTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, kick: make(chan struct{}, 1), arrived: make(chan struct{}),
		pinned: map[string][]messages.NICStatus{}}, nil
}

// SetDesired takes the desired state of a heartbeat answer. It never
// blocks: the reconcile runs in Run. An answer that names the revision held
// (the control plane leaves the overlay out then) reconciles to it again, so
// drift is repaired at every beat; an answer without an overlay or a
// revision changes nothing (the control plane has not placed this node in
// the mesh yet).
func (r *Runner) SetDesired(ds messages.DesiredState) {
	if ds.Overlay == nil {
		r.mu.Lock()
		held := r.desired != nil && ds.OverlayRevision != "" && ds.OverlayRevision == r.revision
		r.mu.Unlock()
		if held {
			r.Kick()
		}
		return
	}
	d, err := desiredFrom(ds.Overlay, ds.Settings)
	r.mu.Lock()
	if err != nil {
		// Keep converging to the last good state; report the bad one.
		r.reconciled, r.lastErr = false, "desired overlay: "+err.Error()
		r.mu.Unlock()
		r.logErr(r.lastErr)
		return
	}
	r.desired, r.revision = &d, ds.Overlay.Revision
	close(r.arrived)
	r.arrived = make(chan struct{})
	r.mu.Unlock()
	r.Kick()
}

// Kick asks Run for a reconcile with the current state.
func (r *Runner) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reconciles each time it is kicked until ctx ends; it returns
// ctx.Err(). Failures are kept for Status and retried at the next kick
// (every heartbeat answer is one).
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Services != nil {
		defer r.cfg.Services.Close()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.kick:
		}
		if _, err := r.reconcile(ctx); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Status is the node's overlay as the next heartbeat reports it.
func (r *Runner) Status() messages.NodeOverlay {
	r.mu.Lock()
	defer r.mu.Unlock()
	impl := r.impl
	if impl == "" {
		impl = r.guessImpl()
	}
	port := r.cfg.ListenPort
	if r.desired != nil && r.desired.ListenPort > 0 {
		port = r.desired.ListenPort
	}
	ep := ""
	if r.cfg.UnderlayIP.IsValid() {
		ep = netip.AddrPortFrom(r.cfg.UnderlayIP, uint16(port)).String()
	}
	return messages.NodeOverlay{PublicKey: r.cfg.Fabric.PublicKey(), Endpoint: ep, WireGuard: impl,
		TunnelOffload: r.offload, Reconciled: r.reconciled, Error: r.lastErr, Conflicts: r.conflicts}
}

// HostPrefixes are the prefixes the host used at the last reconcile, for
// the heartbeat; nil before the first.
func (r *Runner) HostPrefixes() []messages.HostPrefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hostPrefixes
}

// Revision is the revision of the desired overlay held, for the next
// heartbeat; empty before the first one.
func (r *Runner) Revision() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revision
}

// guessImpl names the implementation before the first reconcile does: the
// forced one, else kernel where the module is loaded, else userspace.
func (r *Runner) guessImpl() string {
	switch r.cfg.WireGuard {
	case netfabric.WireGuardKernel, netfabric.WireGuardUserspace:
		return r.cfg.WireGuard
	}
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		return netfabric.WireGuardKernel
	}
	return netfabric.WireGuardUserspace
}

// EnsureNICs makes the taps of vm's NICs, attached to their networks'
// bridges, and returns their names in order. It waits up to
// Config.NetworkWait for the control plane to put the NICs' networks on
// this node. The NICs stay in every later reconcile until ReleaseNICs.
// Failures are *messages.Error with code network_unavailable.
func (r *Runner) EnsureNICs(ctx context.Context, vmID string, nics []messages.NICStatus) ([]string, error) {
	fnics, err := nicsFrom(vmID, nics)
	if err != nil {
		return nil, Unavailable("%v", err)
	}
	r.mu.Lock()
	r.pinned[vmID] = slices.Clone(nics)
	r.mu.Unlock()
	if err := r.waitNetworks(ctx, fnics); err != nil {
		return nil, err
	}
	if _, err := r.reconcile(ctx); err != nil {
		return nil, Unavailable("set up the network of vm %s: %v", vmID, err)
	}
	names := make([]string, len(fnics))
	for i, n := range fnics {
		names[i] = r.cfg.Fabric.TapName(n)
	}
	return names, nil
}

// ReleaseNICs forgets vm's NICs and reconciles without them, removing its
// taps. The caller has already dropped the VM from Config.NICs.
func (r *Runner) ReleaseNICs(ctx context.Context, vmID string) error {
	r.mu.Lock()
	delete(r.pinned, vmID)
	r.mu.Unlock()
	_, err := r.reconcile(ctx)
	if errors.Is(err, ErrNoDesired) {
		return nil
	}
	return err
}

// waitNetworks waits until the desired state holds every NIC's network.
func (r *Runner) waitNetworks(ctx context.Context, nics []netfabric.NIC) error {
	timer := time.NewTimer(r.cfg.NetworkWait)
	defer timer.Stop()
	var woke time.Time
	for {
		r.mu.Lock()
		d, arrived := r.desired, r.arrived
		r.mu.Unlock()
		missing := ""
		if d == nil {
			missing = "no desired overlay from the control plane"
		} else {
			for _, n := range nics {
				if !slices.ContainsFunc(d.Networks, func(nw netfabric.Network) bool { return nw.ID == n.Network }) {
					missing = "network " + n.Network + " is not on this node"
					break
				}
			}
		}
		if missing == "" {
			return nil
		}
		// At most one extra heartbeat every wakeEvery: the control plane's
		// view of placements may lag a few seconds behind the task.
		if r.cfg.Wake != nil && time.Since(woke) >= wakeEvery {
			woke = time.Now()
			r.cfg.Wake()
		}
		poll := time.NewTimer(wakeEvery)
		select {
		case <-poll.C:
		case <-arrived:
		case <-timer.C:
			poll.Stop()
			return Unavailable("%s after %s", missing, r.cfg.NetworkWait)
		case <-ctx.Done():
			poll.Stop()
			return ctx.Err()
		}
		poll.Stop()
	}
}

// reconcile applies the latest desired state with the NICs of every VM.
func (r *Runner) reconcile(ctx context.Context) (netfabric.Report, error) {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	vms := r.cfg.NICs()
	if vms == nil {
		vms = map[string][]messages.NICStatus{}
	}
	r.mu.Lock()
	base := r.desired
	for id, nics := range r.pinned {
		vms[id] = nics
	}
	r.mu.Unlock()
	if base == nil {
		return netfabric.Report{}, ErrNoDesired
	}
	d := *base
	d.NICs = nil
	if d.ListenPort == 0 {
		d.ListenPort = r.cfg.ListenPort
	}
	nets := map[string]bool{}
	for _, n := range d.Networks {
		nets[n.ID] = true
	}
	ids := make([]string, 0, len(vms))
	for id := range vms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fnics, err := nicsFrom(id, vms[id])
		if err != nil {
			r.cfg.Log.Warn("overlay: skip vm nics", "vm", id, "err", err)
			continue
		}
		for _, n := range fnics {
			// A NIC whose network left this node keeps its tap only while
			// the network is desired; it must not block the others.
			if nets[n.Network] {
				d.NICs = append(d.NICs, n)
			}
		}
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.ReconcileTimeout)
	defer cancel()
	start := time.Now()
	rep, err := r.cfg.Fabric.Reconcile(rctx, d)
	took := time.Since(start)
	if err == nil && r.cfg.Services != nil {
		r.cfg.Services.Sync(d)
	}
	r.mu.Lock()
	if rep.WireGuard != "" {
		r.impl, r.offload = rep.WireGuard, rep.TunnelOffload
	}
	r.reconciled = err == nil
	r.lastErr = ""
	if rep.HostPrefixes != nil {
		r.hostPrefixes = hostPrefixesOf(rep.HostPrefixes)
	}
	r.conflicts = conflictsOf(rep.Conflicts)
	if err != nil {
		r.lastErr = err.Error()
	}
	r.mu.Unlock()
	if rep.Changes > 0 {
		acts := rep.Actions
		more := ""
		if len(acts) > maxLoggedActions {
			more = fmt.Sprintf(" (+%d more)", len(acts)-maxLoggedActions)
			acts = acts[:maxLoggedActions]
		}
		r.cfg.Log.Info("overlay reconciled", "changes", rep.Changes, "took", took.Round(time.Millisecond).String(),
			"networks", len(d.Networks), "nics", len(d.NICs), "peers", len(d.Peers), "fdb", len(d.FDB),
			"wireguard", rep.WireGuard, "tunnel_offload", rep.TunnelOffload, "actions", strings.Join(acts, "; ")+more)
	}
	if err != nil {
		r.logErr(err.Error())
	} else {
		r.mu.Lock()
		recovered := r.loggedErr != ""
		r.loggedErr = ""
		r.mu.Unlock()
		if recovered {
			r.cfg.Log.Info("overlay reconcile recovered")
		}
	}
	return rep, err
}

// logErr logs a failure once, not at every retry.
func (r *Runner) logErr(msg string) {
	r.mu.Lock()
	again := r.loggedErr == msg
	r.loggedErr = msg
	r.mu.Unlock()
	if !again {
		r.cfg.Log.Warn("overlay reconcile failing", "err", msg)
	}
}
