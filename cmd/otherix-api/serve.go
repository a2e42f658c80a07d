package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/otherix/otherix/internal/buildinfo"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/actors/maintenance"
	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/election"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/schema"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
	"github.com/otherix/otherix/watch"
)

func newLogger(cfg apiConfig) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.Log.Format, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(cmd *cobra.Command) error {
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, cfg, log, nil)
}

// listeners are the addresses run serves on, for callers that asked for
// port 0 (tests).
type listeners struct {
	REST, Agent net.Addr
}

// run serves until ctx ends or a listener or the etcd member fails. ready,
// when set, hears the listeners once both accept connections.
func run(ctx context.Context, cfg apiConfig, log *slog.Logger, ready func(listeners)) error {
	peer, err := preparePeer(ctx, cfg, log)
	if err != nil {
		return err
	}
	ecfg := etcd.Config{DataDir: cfg.DataDir, Name: cfg.Etcd.Name, PeerURL: cfg.Etcd.PeerURL,
		ClientURL: cfg.Etcd.ClientURL, MaxTxnOps: cfg.Etcd.MaxTxnOps, QuotaBytes: cfg.Etcd.QuotaBytes,
		AutoCompactionMode: cfg.Etcd.AutoCompactionMode, AutoCompactionRetention: cfg.Etcd.AutoCompactionRetention}
	if peer != nil {
		ecfg.Name = memberName(cfg)
		ecfg.PeerURL, ecfg.AdvertisePeerURL, ecfg.PeerTLS, ecfg.Join = peer.PeerURL, peer.AdvertiseURL, peer.TLS, peer.Join
	}
	member, err := etcd.Start(ctx, ecfg)
	if err != nil {
		return err
	}
	defer member.Close()
	if peer != nil && peer.ClusterID != "" {
		if got := fmt.Sprintf("%x", member.ClusterID()); got != peer.ClusterID {
			return fmt.Errorf("joined member is in cluster %s, the join answered cluster %s", got, peer.ClusterID)
		}
	}

	// The REST listener opens now: a learner answers /healthz and a false
	// /readyz on it and serves nothing else until it is a voter.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	front := &frontDoor{}
	front.handler.Store(ptr(server.NotServing("starting", "the control plane is starting")))
	// Requests share a base context that shutdown cancels, so long polls
	// (?wait= up to 60s) end at once instead of holding shutdown up.
	baseCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	httpSrv := &http.Server{
		Handler:           front,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLS.Enabled {
		httpSrv.TLSConfig = &tls.Config{GetCertificate: front.certificate, MinVersion: tls.VersionTLS12}
	}
	served := make(chan error, 2)
	go func() {
		if cfg.TLS.Enabled {
			served <- httpSrv.ServeTLS(ln, "", "")
			return
		}
		served <- httpSrv.Serve(ln)
	}()
	defer func() {
		shutdown, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		_ = httpSrv.Shutdown(shutdown)
	}()
	if member.IsLearner() {
		// Until promoted it holds only its peer certificate (the CA key
		// reaches it with the log), so that is what it answers TLS with.
		if peer != nil {
			if c, err := tls.LoadX509KeyPair(peer.TLS.CertFile, peer.TLS.KeyFile); err == nil {
				front.cert.Store(&c)
			}
		}
		front.handler.Store(ptr(server.NotServing("learner",
			"this replica is an etcd learner catching up; it serves once promoted to voter")))
		log.Info("this replica is a learner: serving nothing until promoted to voter", "name", memberName(cfg))
		if err := waitVoter(ctx, member, served); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Info("promoted to voter: starting the control plane", "name", memberName(cfg))
	}
	// The cluster-wide loops (the gateway's sweeps, liveness, key rotation
	// and backups, and the learner promoter) run on the one replica that
	// wins this election (docs/ha.md); it starts once the gateway has
	// registered its loops.
	owned := election.New(election.Config{Client: member.Client(), Name: memberName(cfg), TTL: cfg.Loops.OwnerTTL, Log: log,
		Sole: func(ctx context.Context) bool { ms, err := member.Members(ctx); return err == nil && len(ms) == 1 }})
	if peer != nil {
		owned.Register("promoter", func(ctx context.Context) { member.RunPromoter(ctx, etcd.PromoterOptions{Log: log}) })
	}
	// A store that filled up before this start still boots: every boot
	// step below reads before it writes, writes answer 507 storage_full,
	// and the storage loop (run at once) frees space and disarms the alarm.
	if s, err := member.Status(ctx); err == nil && s.NoSpace {
		log.Warn("store full at start: writes are refused until space is freed (docs/operations.md)",
			"db_size", s.DBSize, "db_size_in_use", s.DBSizeInUse, "quota", s.Quota)
	}
	// Replicas of one cluster stay within one minor version of each other
	// (versionskew.Replica): checked before this replica migrates the data
	// format or serves, so a replica too new changes nothing.
	if peer != nil {
		if err := retryBoot(ctx, log, "replica versions", func() error {
			return checkReplicaSkew(ctx, member.Client(), memberName(cfg), buildinfo.Version(), log)
		}); err != nil {
			return err
		}
	}
	// The data format next: migrate older data, refuse newer (nothing
	// else has written the store yet).
	if err := retryBoot(ctx, log, "data format", func() error {
		return schema.Ensure(ctx, member.Client(), "otherix-api "+buildinfo.Version(), log)
	}); err != nil {
		return err
	}
	newerData := make(chan error, 1)
	schemaCtx, stopSchemaWatch := context.WithCancel(ctx)
	defer stopSchemaWatch()
	go func() { newerData <- schema.WatchNewer(schemaCtx, member.Client()) }()
	// The store's calls that need consensus fail with no_quorum at once
	// while the member knows no leader, instead of hanging for etcd's
	// request timeout (docs/ha.md, "Without quorum").
	st := store.New(member.NewClient(), store.WithMaxTxnOps(member.MaxTxnOps()), store.WithQuorum(member))
	var seeded bool
	if err := retryBoot(ctx, log, "settings", func() (err error) {
		seeded, err = st.SeedSettings(ctx, messages.DefaultSettings())
		return err
	}); err != nil {
		return fmt.Errorf("seed settings: %w", err)
	}
	if seeded {
		log.Info("new cluster: settings document seeded")
	}

	// The agent client: the control plane's client certificate is issued
	// from the cluster CA and renewed lazily when a third of its validity
	// is left; agents are trusted by the cluster CA and their node name.
	var ca *security.CA
	if err := retryBoot(ctx, log, "cluster CA", func() (err error) {
		ca, err = enrollment.LoadCA(ctx, st, time.Now())
		return err
	}); err != nil {
		return err
	}
	clientCert := agentclient.NewRenewingCert(func(now time.Time) (tls.Certificate, error) {
		return ca.IssueClientCert(security.ControlPlaneCN, now, 0)
	}, nil)
	if _, err := clientCert.Get(); err != nil {
		return err
	}
	agents := agentclient.New(ca.Pool(), clientCert.Get)
	// Nodes heartbeat one replica each, which keeps their VM samples in
	// memory; the other replicas ask it for them (docs/metrics.md).
	var peerSamples gateway.PeerMetrics
	if peer != nil {
		peerSamples = newPeerMetrics(memberName(cfg), st, peer.TLS, ca.Pool(), log)
	}

	gw, err := gateway.Start(ctx, st, gateway.Config{
		NoDispatch: !cfg.Jobs.Dispatch, ClaimTTL: cfg.Jobs.ClaimTTL, JobAttempts: cfg.Jobs.Attempts,
		JobBackoffBase: cfg.Jobs.BackoffBase, JobBackoffMax: cfg.Jobs.BackoffMax,
		TaskRetention: cfg.Tasks.Retention,
		BackupDir:     cfg.Backup.Dir, BackupInterval: cfg.Backup.Interval, BackupKeep: cfg.Backup.Keep,
		Snapshot: member.Snapshot, Prune: etcd.PruneSnapshots,
		Space: member, SpaceInterval: cfg.Etcd.SpaceCheckInterval,
		SpacePolicy: maintenance.StoragePolicy{MinFreeBytes: cfg.Etcd.DefragMinFreeBytes},
		Identity: identity.Config{AuditRetention: cfg.Audit.Retention,
			LoginPerSource: cfg.Auth.LoginPerSource, LoginPerAccount: cfg.Auth.LoginPerAccount,
			AnonymousPerMinute: cfg.Auth.AnonymousPerMinute, RefreshGrace: refreshGrace(cfg.Auth.RefreshGrace)},
		Nodes: gateway.NodesConfig{HeartbeatInterval: cfg.Heartbeat.Interval, GoneAfter: cfg.Nodes.GoneAfter,
			Shared: peer != nil},
		Placement: cfg.Placement, Agent: agents, Calls: agents, Membership: member, Replica: replicaName(cfg, peer),
		Loops:       owned,
		Quorum:      member,
		PeerMetrics: peerSamples,
	}, log)
	if err != nil {
		return err
	}
	defer gw.Close()
	// After gw.Close's defer, so it runs first: the loops stop and this
	// replica resigns before the gateway goes, and another takes over at once.
	ownCtx, stopOwning := context.WithCancel(ctx)
	ownDone := make(chan struct{})
	go func() {
		defer close(ownDone)
		owned.Run(ownCtx)
	}()
	defer func() { stopOwning(); <-ownDone }()
	if peer != nil {
		// This replica's own peer certificate, renewed while it runs.
		renewCtx, stopRenew := context.WithCancel(ctx)
		renewDone := make(chan struct{})
		go func() {
			defer close(renewDone)
			runPeerRenewal(renewCtx, peer.TLS, memberName(cfg), peerSANs(cfg.PeerListen, cfg.Advertise), ca, peerRenewInterval, log)
		}()
		defer func() { stopRenew(); <-renewDone }()
	}
	if err := retryBoot(ctx, log, "bootstrap admin", func() error { return bootstrapAdmin(ctx, gw, cfg, log) }); err != nil {
		return err
	}

	scfg := server.DefaultConfig()
	scfg.MaxBodyBytes, scfg.MetricsEnabled, scfg.MetricsPublic = cfg.HTTP.MaxBodyBytes, cfg.HTTP.Metrics, cfg.HTTP.MetricsPublic
	scfg.ConsoleOrigins = cfg.HTTP.ConsoleOrigins
	scfg.StoreStatus = member.Status
	scfg.HasQuorum = member.HasQuorum
	// One etcd watch per replica feeds every GET /v1/watch stream; it
	// stops before the gateway and the member do.
	hub := watch.New(st.Client(), watch.Config{Quorum: member, Buffer: cfg.Watch.Buffer, Bookmark: cfg.Watch.Bookmark}, log)
	hubCtx, stopHub := context.WithCancel(ctx)
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		hub.Run(hubCtx)
	}()
	defer func() {
		stopHub()
		<-hubDone
	}()
	scfg.Watch = hub
	scfg.WatchMaxClients, scfg.WatchPerUser, scfg.WatchAuthCheck = cfg.Watch.MaxClients, cfg.Watch.PerUser, cfg.Watch.AuthCheck
	srv := server.New(scfg, gw, log)
	agentSrv, agentLn, err := startAgentListener(baseCtx, cfg, gw, member.HasQuorum, log)
	if err != nil {
		return err
	}
	fp := gw.CA().Fingerprint()
	scheme := "http"
	if cfg.TLS.Enabled {
		// The cluster CA is in <data_dir>/pki/ca.pem (startAgentListener
		// wrote it); clients pin it by fingerprint, so the certificate is
		// issued afresh at every start like the agent listener's.
		cert, err := gw.CA().IssueServerCert(cfg.TLS.SANs, time.Now(), 0)
		if err != nil {
			_ = agentLn.Close()
			return fmt.Errorf("REST listener certificate: %w", err)
		}
		front.cert.Store(&cert)
		scheme = "https"
	} else {
		log.Warn("tls.enabled is false: the REST listener serves plain HTTP and credentials travel in clear", "listen", ln.Addr().String())
	}
	front.handler.Store(ptr(srv.Handler()))
	go func() { served <- agentSrv.ServeTLS(agentLn, "", "") }()
	if peer != nil {
		r := &messages.Replica{Name: memberName(cfg), PeerURL: peer.AdvertiseURL, APIURL: serviceURL(cfg.TLS.Enabled, ln.Addr().String()),
			AgentURL: serviceURL(true, agentLn.Addr().String()), JoinedAt: time.Now().UTC(), Version: buildinfo.Version()}
		if err := st.RecordReplica(ctx, r); err != nil {
			log.Warn("record this replica's URLs", "err", err)
		}
	}
	abs := cfg.DataDir // absolute since loadConfig
	if cfg.TLS.Enabled {
		log.Info("otherix-api ready", "listen", scheme+"://"+ln.Addr().String(), "ca_fingerprint", fp, "sans", cfg.TLS.SANs,
			"data_dir", abs, "version", buildinfo.Version())
		fmt.Fprintf(os.Stdout, "otherix-api %s listening on https://%s (CA fingerprint %s, data dir %s)\n", buildinfo.Version(), ln.Addr(), fp, abs)
	} else {
		log.Info("otherix-api ready", "listen", scheme+"://"+ln.Addr().String(), "data_dir", abs, "version", buildinfo.Version())
		fmt.Fprintf(os.Stdout, "otherix-api %s listening on http://%s (data dir %s)\n", buildinfo.Version(), ln.Addr(), abs)
	}
	log.Info("agent listener ready", "listen", "https://"+agentLn.Addr().String(), "ca_fingerprint", fp, "sans", cfg.Agent.SANs)
	fmt.Fprintf(os.Stdout, "agent listener on https://%s (CA fingerprint %s)\n", agentLn.Addr(), fp)
	if ready != nil {
		ready(listeners{REST: ln.Addr(), Agent: agentLn.Addr()})
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	case err := <-member.Err():
		return fmt.Errorf("etcd member stopped: %w", err)
	case err := <-newerData:
		// A newer replica migrated the store: this one would misread it.
		if schema.IsTooNew(err) {
			log.Error("stopping: a newer otherix-api changed the store's data format", "err", err)
			return err
		}
	case <-member.Stopped():
		return memberStopped(ctx, member, log)
	}
	cancelRequests()
	shutdown, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	agentErr := agentSrv.Shutdown(shutdown)
	return errors.Join(httpSrv.Shutdown(shutdown), agentErr)
}

// drainTimeout bounds how long a stopping replica waits for requests in
// flight: a write waits up to the actor's ask timeout (10 s), then its
// Idempotency-Key's record is written with retries. A process that exits
// before that leaves the key in progress for a minute, and every retry of
// the client's write fails meanwhile (found by a rolling restart).
const drainTimeout = 30 * time.Second

// frontDoor is the REST listener's handler and certificate, swapped once
// the replica may serve: a learner answers NotServing with its peer
// certificate, a voter the API with its REST certificate.
type frontDoor struct {
	handler atomic.Pointer[http.Handler]
	cert    atomic.Pointer[tls.Certificate]
}

func (f *frontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*f.handler.Load()).ServeHTTP(w, r)
}

func (f *frontDoor) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := f.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no certificate yet")
}

func ptr(h http.Handler) *http.Handler { return &h }

// waitVoter blocks until the member is a voter, ctx ends (nil), or the
// learner-phase listener fails.
func waitVoter(ctx context.Context, member *etcd.Member, served <-chan error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- member.WaitVoter(wctx, 200*time.Millisecond) }()
	select {
	case err := <-done:
		if ctx.Err() != nil {
			return nil
		}
		return err
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case err := <-member.Err():
		return fmt.Errorf("etcd member stopped: %w", err)
	case <-member.Stopped():
		return memberStopped(ctx, member, nil)
	}
}

// memberStopped explains a member that stopped by itself. Removed from the
// cluster (otherix cluster members remove), this replica must never serve
// again from its data dir: it logs why and exits non-zero, and the
// deferred shutdown lets the answer to the removal request go out.
func memberStopped(ctx context.Context, member *etcd.Member, log *slog.Logger) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	cause := member.StopCause(pctx)
	if errors.Is(cause, etcd.ErrRemoved) {
		if log != nil {
			log.Error("this replica was removed from the cluster: it stops serving now; to bring it back, empty its data dir and join again with a new replica join token",
				"err", cause)
		}
		return fmt.Errorf("removed from the cluster, stopped serving (empty the data dir and join again with a new replica join token): %w", cause)
	}
	return fmt.Errorf("etcd member stopped: %w", cause)
}

// replicaName names this replica in job claims: its member name when it is
// one of several, else the gateway's default (the host name).
func replicaName(cfg apiConfig, peer *peerSetup) string {
	if peer == nil {
		return ""
	}
	return memberName(cfg)
}

// startAgentListener writes the cluster CA to <data_dir>/pki, issues the
// agent listener's server certificate from it and opens the listener. Agents
// pin the CA by fingerprint (join tokens carry it), so the certificate is
// issued afresh at every start. Client certificates are verified against the
// cluster CA when given: enrollment has none, and the heartbeat handler
// requires one (and the gateway checks it is the node's recorded one).
func startAgentListener(baseCtx context.Context, cfg apiConfig, gw *gateway.Gateway, hasQuorum func() bool, log *slog.Logger) (*http.Server, net.Listener, error) {
	ca := gw.CA()
	if err := writePKI(cfg.DataDir, ca); err != nil {
		return nil, nil, err
	}
	cert, err := ca.IssueServerCert(cfg.Agent.SANs, time.Now(), 0)
	if err != nil {
		return nil, nil, fmt.Errorf("agent listener certificate: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.AgentListen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", cfg.AgentListen, err)
	}
	srv := &http.Server{
		Handler: server.NewAgentAPI(gw, log, server.AgentQuorum(hasQuorum), server.AgentReplica(memberName(cfg))),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    ca.Pool(),
		},
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return srv, ln, nil
}

// writePKI keeps the cluster CA in <data_dir>/pki: ca.pem (0644) for
// operators and ca-key.pem (0600) for recovery. etcd remains the source of
// truth; these files are rewritten at every start.
func writePKI(dataDir string, ca *security.CA) error {
	dir := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("pki dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("write ca.pem: %w", err)
	}
	if err := os.Chmod(filepath.Join(dir, "ca.pem"), 0o644); err != nil {
		return fmt.Errorf("write ca.pem: %w", err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("ca key: %w", err)
	}
	if err := security.WriteKeyFile(filepath.Join(dir, "ca-key.pem"), key); err != nil {
		return fmt.Errorf("write ca-key.pem: %w", err)
	}
	return nil
}

// bootstrapAdmin creates the first admin when the cluster has none. A
// generated password is printed once to stdout (and flagged in the log
// without the password); when the admin exists already nothing is said about
// passwords.
func bootstrapAdmin(ctx context.Context, gw *gateway.Gateway, cfg apiConfig, log *slog.Logger) error {
	email := cfg.Admin.Email
	if email == "" {
		email = "admin@localhost"
	}
	created, generated, err := gw.BootstrapAdmin(ctx, email, cfg.Admin.Password)
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	if !created {
		return nil
	}
	if generated == "" {
		log.Info("bootstrap admin created", "email", email)
		return nil
	}
	log.Warn("bootstrap admin created with a generated password, printed once on stdout; change it", "email", email)
	fmt.Fprintf(os.Stdout, "bootstrap admin: %s / %s (change it with otherix user passwd)\n", email, generated)
	return nil
}

var _ server.ControlPlane = (*gateway.Gateway)(nil)
var _ server.Images = (*gateway.Gateway)(nil)

// refreshGrace maps the setting to identity.Config's: 0 in the file means no
// grace, which identity.Config spells as a negative value (its zero is the
// default).
func refreshGrace(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
