package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/otherix/otherix/internal/buildinfo"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/failover"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/capacity"
	"github.com/otherix/otherix/nodeagent/enroll"
	"github.com/otherix/otherix/nodeagent/heartbeat"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/netfabric"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/nodeagent/server"
	"github.com/otherix/otherix/nodeagent/storagepool"
	"github.com/otherix/otherix/nodeagent/vmactor"
	"github.com/otherix/otherix/security"
)

// envAccel names the environment variable that sets serve's default
// accelerator (a --accel flag still wins).
const envAccel = "OTHERIX_ACCEL"

// envQEMUUser names the environment variable that sets serve's default
// QEMU user (a --qemu-user flag still wins).
const envQEMUUser = "OTHERIX_QEMU_USER"

// defaultListen is the agent API's listener: every interface, since the
// control plane reaches it over the network (mutual TLS keeps others out).
const defaultListen = ":7444"

type serveOptions struct {
	stateDir, accel, listen, advertise, poolDir, runDir, runAsUser string
	debugSocket, logFormat, logLevel                               string
	sandbox                                                        bool
	stopTimeout, renewBefore                                       time.Duration
	// metricsInterval is how often running VMs are sampled (0: off);
	// metricsTokenFile, if set, holds a bearer token for /metrics.
	metricsInterval  time.Duration
	metricsTokenFile string
	dataPlane        dataPlaneOptions
	images           imageOptions
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	defAccel := capacity.AccelAuto
	if v := os.Getenv(envAccel); v != "" {
		defAccel = v
	}
	defUser := qemu.DefaultUser
	if v, ok := os.LookupEnv(envQEMUUser); ok {
		defUser = v
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the agent: run this node's VMs and report them to the control plane",
		Long: `Run the agent: load the identity written by bootstrap, serve the agent API
(mutual TLS, control plane only) on --listen, re-adopt every VM still running
on this node, and heartbeat the node's observed state until SIGINT or SIGTERM.
Stopping the agent never stops a VM.

--accel auto does not trust /dev/kvm on its own (a nested host may have one
that cannot boot guests): it boots a small long-mode test guest under tcg and
under kvm and uses kvm only if it boots there no slower; the choice and both
times are the node's kvm_reason. Use --accel kvm to force KVM, or set
` + envAccel + ` to change the default.

The network data plane (--data-plane; on by default when running as root)
keeps a bridge per network, a tap per VM NIC and VXLAN over a WireGuard
mesh in step with what the control plane sends in each heartbeat answer.
Its WireGuard key is generated under --state-dir and only the public key
leaves the node. Stopping the agent stops a userspace WireGuard device
(the overlay pauses until the agent is back); bridges and taps stay.

Image downloads are untrusted: the agent connects only to addresses
outside loopback, this host's own addresses, link-local (169.254.0.0/16,
fe80::/10), multicast and the cluster's overlay networks, checked on every
connection and redirect;
--image-allow (or ` + envImageAllow + `) adds exceptions, such as
127.0.0.1/32 for a mirror on this host. No HTTP proxy is used. A download
over --image-max-size, or an image whose virtual size is over it, is
refused. Each image is checked (raw or qcow2 only, no backing or data
file) and converted into a standalone qcow2 before a VM uses it.

QEMU runs as the unprivileged --qemu-user (default ` + qemu.DefaultUser + `, created by
scripts/install-deps.sh) from the moment it is exec'd: the agent opens its
disks, seed, taps and sockets and QEMU inherits the descriptors, so it needs
no access to any host path. Its seccomp sandbox denies fork/exec, set*id,
obsolete and resource-control syscalls. --qemu-user root opts out (QEMU then
runs as root; not recommended). The agent refuses to start if the user does
not exist.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.dataPlane.validate(); err != nil {
				return fmt.Errorf("otherix-agent: serve: %w", err)
			}
			if _, err := o.images.cacheOptions(); err != nil {
				return fmt.Errorf("otherix-agent: serve: %w", err)
			}
			if !capacity.ValidAccel(o.accel) {
				src := "--accel"
				if !cmd.Flags().Changed("accel") {
					src = envAccel
				}
				return fmt.Errorf("otherix-agent: serve: %s must be auto, kvm or tcg, got %q", src, o.accel)
			}
			for _, d := range []struct {
				flag string
				dir  *string
			}{{"--state-dir", &o.stateDir}, {"--pool-dir", &o.poolDir}, {"--run-dir", &o.runDir}} {
				abs, err := absDir(d.flag, *d.dir)
				if err != nil {
					return fmt.Errorf("otherix-agent: serve: %w", err)
				}
				*d.dir = abs
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log, err := newLogger(cmd.ErrOrStderr(), o.logFormat, o.logLevel)
			if err != nil {
				return fmt.Errorf("otherix-agent: serve: %w", err)
			}
			if err := serve(ctx, log, o); err != nil {
				return fmt.Errorf("otherix-agent: serve: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.stateDir, "state-dir", defaultStateDir, "state directory written by otherix-agent bootstrap")
	f.StringVar(&o.accel, "accel", defAccel, "accelerator: auto (kvm only if a test guest boots under it no slower than under tcg), kvm or tcg (default from $"+envAccel+")")
	f.StringVar(&o.listen, "listen", defaultListen, "address of the agent API (mutual TLS)")
	f.StringVar(&o.advertise, "advertise", "", "URL the control plane uses to reach the agent API (default: https://<this host's address towards the control plane>:<listen port>)")
	f.StringVar(&o.poolDir, "pool-dir", "", "directory of the default storage pool: image cache and VM disks (default: <state-dir>/pools/default)")
	f.StringVar(&o.runDir, "run-dir", "", "directory for QEMU pid files and sockets; keep it short (default: <state-dir>/run)")
	f.StringVar(&o.runAsUser, "qemu-user", defUser, "unprivileged user QEMU runs as; root (or empty) runs QEMU as root, which is not recommended (default from $"+envQEMUUser+")")
	f.BoolVar(&o.sandbox, "qemu-sandbox", true, "run QEMU under its seccomp sandbox ("+qemu.SandboxOpts+")")
	f.DurationVar(&o.stopTimeout, "stop-timeout", 2*time.Minute, "how long a graceful stop waits when the task names no timeout")
	f.StringVar(&o.dataPlane.mode, "data-plane", dataPlaneAuto, "network data plane (bridges, taps, VXLAN over WireGuard): auto (on when running as root), on or off")
	// --overlay was this flag's first name; "overlay" also names the
	// network overlay and qcow2 layers, so it stays only as an alias.
	f.StringVar(&o.dataPlane.mode, "overlay", dataPlaneAuto, "deprecated alias of --data-plane")
	_ = f.MarkDeprecated("overlay", "use --data-plane")
	f.StringVar(&o.dataPlane.wireguard, "wireguard", netfabric.WireGuardAuto, "WireGuard implementation: auto (kernel when the module exists, else userspace), kernel or userspace")
	f.StringVar(&o.dataPlane.underlayIP, "underlay-ip", "", "IPv4 address other nodes reach this node's WireGuard at (default: this host's address towards the control plane)")
	f.IntVar(&o.dataPlane.wireguardPort, "wireguard-port", netfabric.DefaultListenPort, "WireGuard UDP port (the control plane's desired state may name another)")
	f.StringVar(&o.dataPlane.wireguardIf, "wireguard-if", "", "WireGuard interface name (default oxwg0); nodes sharing a host need distinct names")
	f.BoolVar(&o.dataPlane.tunnelOffload, "wireguard-offload", true, "userspace WireGuard: take VXLAN from the kernel in 64 KiB UDP-tunnel GSO batches where the kernel's TUN can (Linux 6.17+); false uses wireguard-go's own TUN")
	o.images.addFlags(f)
	f.StringVar(&o.debugSocket, "debug-socket", "", "unix socket serving runtime profiles and the goroutine dump to root only (default: <run-dir>/debug/agent.sock; \"off\" opens none)")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.DurationVar(&o.metricsInterval, "metrics-interval", vmactor.DefaultMetricsInterval, "how often each running VM is sampled (vCPU time, RSS, drives, NICs) for heartbeats and /metrics; 0 turns sampling off")
	f.StringVar(&o.metricsTokenFile, "metrics-token-file", "", "file (mode 600) holding a bearer token with which a client without the control plane's certificate, such as Prometheus, may read /metrics on --listen; default: the control plane's certificate only")
	f.DurationVar(&o.renewBefore, "renew-before", 0, "renew the node certificate this long before it expires (default: once two thirds of its lifetime have passed)")
	return cmd
}

// serve runs the agent until ctx ends.
func serve(ctx context.Context, log *slog.Logger, o serveOptions) error {
	st, err := enroll.LoadState(o.stateDir)
	if errors.Is(err, enroll.ErrNotEnrolled) {
		return fmt.Errorf("not enrolled: run otherix-agent bootstrap (%w)", err)
	}
	if err != nil {
		return err
	}
	// Before any VM record is read: a newer agent's state is refused.
	if err := ensureStateFormat(o.stateDir); err != nil {
		return err
	}
	if time.Now().After(st.Cert.NotAfter) {
		return fmt.Errorf("node certificate expired at %s: run otherix-agent bootstrap --force with a new join token",
			st.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	// QEMU is our child; as subreaper we also adopt QEMUs whose starter
	// died, and reap them ourselves.
	if err := qemu.SetChildSubreaper(); err != nil {
		return err
	}
	go qemu.ReapOrphans(ctx)
	capa, err := capacity.Probe(o.accel)
	if err != nil {
		return err
	}
	qemuUser, err := resolveQEMUUser(log, o.runAsUser, os.Geteuid())
	if err != nil {
		return err
	}
	if err := checkKVMAccess(log, &capa, o.accel, qemuUser, kvmDevice); err != nil {
		return err
	}
	qemuVersions := capacity.QEMUVersions(ctx)
	if o.poolDir == "" {
		o.poolDir = filepath.Join(o.stateDir, "pools", "default")
	}
	if o.runDir == "" {
		o.runDir = filepath.Join(o.stateDir, "run")
	}
	if err := checkRunDir(o.runDir); err != nil {
		return err
	}
	defer startDebugSocket(ctx, log, o.debugSocket, o.runDir)()
	var metricsToken string
	if o.metricsTokenFile != "" {
		if metricsToken, err = server.LoadMetricsToken(o.metricsTokenFile); err != nil {
			return err
		}
	}
	if o.metricsInterval < 0 {
		return fmt.Errorf("--metrics-interval must not be negative")
	}
	imgOpts, err := o.images.cacheOptions()
	if err != nil {
		return err
	}
	imgOpts.DiskDirs = []string{filepath.Join(o.poolDir, "vms")}
	imgOpts.OnEvict = func(evicted []string, err error) {
		if err != nil {
			log.Warn("image cache eviction", "err", err, "evicted", evicted)
			return
		}
		log.Info("image cache over its limit: evicted unused images", "sha256", evicted)
	}
	cache, err := images.New("default", filepath.Join(o.poolDir, "images"), imgOpts)
	if err != nil {
		return err
	}
	defer cache.Close()
	// Before any VM actor runs: the migration rewrites VM records.
	if err := migrateImageCache(ctx, log, cache, filepath.Join(o.stateDir, "vms")); err != nil {
		return err
	}
	imgDeny := &imageDeny{cache: cache}
	// The data plane asks the VM manager for NICs only once a desired
	// state arrived, which is after vms is set.
	var vms *vmactor.Manager
	var dp *dataPlane
	if on, _ := o.dataPlane.enabled(); on {
		dp, err = startDataPlane(ctx, log, o.dataPlane, o.stateDir, st.Config.Server, st.Servers(),
			func() map[string][]messages.NICStatus { return vms.NICs() })
		if err != nil {
			return err
		}
		defer dp.close(log)
	} else {
		log.Info("network data plane off: VMs with network interfaces cannot run on this node", "data_plane", o.dataPlane.mode)
	}
	// A VM whose guest powered off, panicked or paused on a disk error is
	// reported at once: the heartbeat loop (made below) is woken.
	var beatNow atomic.Pointer[heartbeat.Loop]
	vcfg := vmactor.Config{
		StateDir: filepath.Join(o.stateDir, "vms"), RunDir: o.runDir, DiskDir: filepath.Join(o.poolDir, "vms"),
		Images: cache, Accel: capa.Accelerator, QEMUUser: qemuUser, Sandbox: o.sandbox,
		StopTimeout: o.stopTimeout, Log: log, MetricsInterval: o.metricsInterval,
		Changed: func() {
			if l := beatNow.Load(); l != nil {
				l.Wake()
			}
		},
	}
	if dp != nil {
		vcfg.Network = dp.runner
	}
	if o.metricsInterval == 0 {
		vcfg.MetricsInterval = -1 // off
	}
	vms, err = vmactor.New(vcfg)
	if err != nil {
		return err
	}
	defer func() {
		// Operations cancelled by the stop end within QEMU's quit waits.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := vms.Close(cctx); err != nil {
			log.Warn("stop vm actors", "err", err)
		}
	}()
	if err := vms.Recover(); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("agent API listener: %w", err)
	}
	endpoint, err := advertiseURL(o.advertise, ln.Addr(), st.Config.Server)
	if err != nil {
		ln.Close()
		return err
	}
	// One identity for the API's server certificate and the heartbeat's
	// client certificate: a renewal swaps both at once.
	identity := enroll.NewIdentity(st.TLSCert)
	tlsConf := server.TLSConfig(identity.Get, st.CAPool(), log)
	if metricsToken != "" {
		tlsConf = server.AllowTokenClients(tlsConf)
	}
	api := &http.Server{
		Handler:           server.NewHandler(vms, log, &server.Metrics{Source: vms.Metrics, Token: metricsToken}),
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	apiDone := make(chan error, 1)
	go func() { apiDone <- api.ServeTLS(ln, "", "") }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = api.Shutdown(sctx)
	}()

	// Heartbeats and renewals go to whichever replica answers, from the
	// list the last heartbeat answer named (kept in the state dir).
	client, replicas, err := heartbeat.NewFailoverClient(identity.Get, st.CAPool(), st.Servers())
	if err != nil {
		return err
	}
	replicas.OnSwitch = func(from, to string) {
		log.Warn("control plane replica not answering; using another", "from", from, "to", to)
	}
	go renewLoop(ctx, log, st, client, identity, o.renewBefore)
	log.Info("agent starting", "version", buildinfo.Version(), "node", st.Config.NodeName, "server", st.Config.Server,
		"api", ln.Addr().String(), "endpoint", endpoint,
		"accelerator", capa.Accelerator, "kvm", capa.KVM, "kvm_reason", capa.KVMReason,
		"cpus", capa.CPUs, "memory_mib", capa.MemoryMiB, "qemu", strings.Join(qemuVersions, "; "),
		"qemu_user", qemuUserName(qemuUser), "qemu_sandbox", o.sandbox,
		"vms", len(vms.VMs()))
	if len(qemuVersions) == 0 {
		log.Warn("no qemu-system-x86_64 or qemu-system-aarch64 on PATH: this node cannot run VMs")
	}
	// The pools the control plane assigns: realised (directory, marker or
	// filesystem check) and measured for each heartbeat; until the first
	// answer names them, --pool-dir is reported as the default pool.
	pools := storagepool.New(storagepool.Config{Cluster: security.Fingerprint(st.CA), DefaultDir: o.poolDir, Log: log})
	defer func() {
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pools.Wait(wctx) // a probe stuck on a hung mount is left behind
	}()
	loop := &heartbeat.Loop{
		Client: client,
		URL:    heartbeat.URL(st.Config.Server),
		Observe: func(ctx context.Context) messages.Heartbeat {
			return messages.Heartbeat{
				AgentVersion:    buildinfo.Version(),
				Endpoint:        endpoint,
				Arch:            runtime.GOARCH,
				Capacity:        capa,
				QEMUVersions:    qemuVersions,
				Pools:           pools.Report(ctx),
				VMs:             vms.VMs(),
				Images:          vms.Images(),
				Overlay:         dp.status(),
				OverlayRevision: dp.revision(),
				HostPrefixes:    dp.hostPrefixes(),
				VMMetrics:       vms.Metrics(),
			}
		},
		OnDesired: func(d messages.DesiredState) {
			imgDeny.update(d)
			dp.setDesired(d)
			pools.SetDesired(d.Pools)
		},
		OnReplicas: func(urls []string) { updateReplicas(log, st, replicas, urls) },
		Log:        log,
	}
	dp.setWake(loop.Wake)
	beatNow.Store(loop)
	loopDone := make(chan struct{})
	go func() { _ = loop.Run(ctx); close(loopDone) }()
	select {
	case <-ctx.Done():
	case err := <-apiDone:
		log.Error("agent API stopped", "err", err)
	}
	<-loopDone
	s := loop.Status()
	log.Info("agent stopping; VMs keep running", "heartbeats_ok", s.Successes, "heartbeats_failed", s.Failures, "last_ok", s.OK)
	return nil
}

// updateReplicas adopts the replica list a heartbeat answer named: the
// failover transport uses it from the next request, and the state dir keeps
// it for the next start. The URL bootstrap was given stays last, the
// operator's own choice of a last resort. A list that is not a few https
// URLs is ignored (and logged): the current one still works.
func updateReplicas(log *slog.Logger, st *enroll.State, tr *failover.Transport, urls []string) {
	if err := enroll.CheckReplicaURLs(urls); err != nil {
		log.Warn("heartbeat answer names unusable replicas; keeping the current list", "err", err)
		return
	}
	next := slices.Clone(urls)
	if !slices.Contains(next, st.Config.Server) {
		next = append(next, st.Config.Server)
	}
	if len(next) > failover.MaxServers {
		next = append(next[:failover.MaxServers-1], st.Config.Server)
	}
	if slices.Equal(next, tr.Servers()) {
		return
	}
	if err := tr.SetServers(next); err != nil {
		log.Warn("heartbeat answer names unusable replicas; keeping the current list", "err", err)
		return
	}
	if err := enroll.SaveReplicas(st.Dir, urls); err != nil {
		log.Warn("keep the replica list in the state dir", "err", err)
	}
	log.Info("control plane replicas", "servers", next, "current", tr.Current())
}

// renewInterval is how often the agent checks whether its certificate is
// due; retries after a failure come at the same pace.
const renewInterval = time.Hour

// renewLoop renews the node certificate over mutual TLS when it is due,
// checking at start and every renewInterval, and swaps it into identity.
func renewLoop(ctx context.Context, log *slog.Logger, st *enroll.State, client *http.Client, identity *enroll.Identity, before time.Duration) {
	t := time.NewTicker(renewInterval)
	defer t.Stop()
	for {
		if now := time.Now(); enroll.RenewalDue(st.Cert, now, before) {
			next, err := enroll.Renew(ctx, st, client, now)
			if err != nil {
				log.Warn("certificate renewal failed; retrying later", "err", err, "not_after", st.Cert.NotAfter.UTC(),
					"retry_in", renewInterval)
			} else {
				st = next
				identity.Set(st.TLSCert)
				// A kept-alive connection still speaks as the old
				// certificate, which the control plane stops accepting once
				// the new one is seen: new handshakes for everything.
				client.CloseIdleConnections()
				log.Info("node certificate renewed", "not_after", st.Cert.NotAfter.UTC())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// advertiseURL is how the control plane reaches this agent: the flag, or the
// address this host uses towards the control plane with the listener's port.
func advertiseURL(flag string, addr net.Addr, server string) (string, error) {
	if flag != "" {
		u, err := url.Parse(flag)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return "", fmt.Errorf("--advertise %q must be an https URL", flag)
		}
		return strings.TrimRight(flag, "/"), nil
	}
	port := strconv.Itoa(addr.(*net.TCPAddr).Port)
	host, err := hostTowards(server)
	if err != nil {
		return "", fmt.Errorf("%w (set --advertise)", err)
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// sunPathMax is the longest unix socket path Linux takes (sun_path less its
// NUL), which nodeagent/qemu checks for each VM's sockets.
const sunPathMax = 107

// vmIDLen is the length of a VM id (a ULID), the directory under the run dir.
const vmIDLen = 26

// checkRunDir refuses, at start, a run dir whose VM sockets would be too long
// for a unix socket: otherwise the first create fails, deep in QEMU's spec
// check (a state dir in a deep checkout, as make dev's default has it).
func checkRunDir(runDir string) error {
	longest := filepath.Join(runDir, strings.Repeat("x", vmIDLen), qemu.SerialSocket)
	if q := filepath.Join(runDir, strings.Repeat("x", vmIDLen), qemu.QMPSocket); len(q) > len(longest) {
		longest = q
	}
	if len(longest) > sunPathMax {
		return fmt.Errorf("run dir %s is too long: a VM's socket under it would be %d bytes, unix sockets allow %d; "+
			"pass a run dir of at most %d bytes with --run-dir (e.g. /run/otherix-agent)",
			runDir, len(longest), sunPathMax, len(runDir)-(len(longest)-sunPathMax))
	}
	return nil
}
