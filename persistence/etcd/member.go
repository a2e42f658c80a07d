// Package etcd runs the embedded etcd member that holds all control-plane state,
// and takes and restores its snapshots.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config describes one embedded member.
type Config struct {
	// DataDir holds the member's WAL and database. It is created 0700.
	DataDir string
	// Name is the member name; it must match what a restore wrote.
	Name string
	// PeerURL is where this member listens for Raft peers. A single member
	// still needs one; the default is a unix socket inside DataDir so no TCP
	// port is opened. A TCP listener is https://HOST:PORT and needs PeerTLS:
	// plain http peer traffic is refused.
	PeerURL string
	// AdvertisePeerURL is the URL peers dial, when it differs from PeerURL
	// (a listener on 0.0.0.0). Default PeerURL.
	AdvertisePeerURL string
	// PeerTLS secures a TCP peer listener: mutual TLS under the cluster CA,
	// accepting only replica peer certificates (security.SignReplicaCSR).
	PeerTLS *PeerTLS
	// Join starts a member that is not yet in any cluster into an existing
	// one. It is read only on first boot: once the data dir holds a member,
	// the membership in it wins and Join is ignored.
	Join *Join
	// MaxLearners bounds how many learners the cluster accepts at once
	// (default DefaultMaxLearners). It must leave room for a fourth replica
	// waiting as a learner while a fifth joins.
	MaxLearners int
	// ClientURL, when set, opens an etcd client listener (for etcdctl while
	// debugging). Empty by default: the API talks to etcd in-process.
	ClientURL string
	// MaxTxnOps is etcd's per-transaction operation limit; sweeps chunk below it.
	MaxTxnOps uint
	// StartTimeout bounds how long Start waits for the member to become ready.
	StartTimeout time.Duration
	// QuotaBytes is the backend size at which etcd raises its space alarm
	// and refuses writes (default DefaultQuotaBytes).
	QuotaBytes int64
	// AutoCompactionMode is "periodic" (keep AutoCompactionRetention of
	// history, a duration such as "1h") or "revision" (keep that many
	// revisions). Default periodic, 1h: watches and long polls resume from
	// history, so keep at least an hour.
	AutoCompactionMode      string
	AutoCompactionRetention string
}

// PeerTLS names the PEM files of the peer listener: this replica's peer
// certificate and key (CN otherix-replica-<name>, with ReplicaPeerSAN) and
// the cluster CA every peer must chain to.
type PeerTLS struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// Join is how a new member enters an existing cluster: an existing member
// added it as a learner (Member.AddLearner, or MemberAddAsLearner through
// any member's client) and returned InitialCluster, the
// name=peerURL,... list etcd needs with initial-cluster-state=existing.
type Join struct {
	InitialCluster string
}

// DefaultMaxLearners lets a fourth replica wait as a learner while a fifth
// joins, with one more for a join that is still being started.
const DefaultMaxLearners = 3

// Defaults of the space settings.
const (
	// DefaultQuotaBytes is etcd's recommended maximum, stated here rather
	// than left at etcd's 2 GiB default.
	DefaultQuotaBytes              = 8 << 30
	DefaultAutoCompactionMode      = "periodic"
	DefaultAutoCompactionRetention = "1h"
)

// Member is a running embedded etcd server and its in-process client.
type Member struct {
	cfg    Config
	server *embed.Etcd
	client *clientv3.Client
	// peerHTTP probes other members' peer listeners for Members; nil on a
	// unix-socket member, which has no peers.
	peerHTTP *http.Client
	// promoteMu keeps promotions from this process one at a time.
	promoteMu sync.Mutex
	// unnamedSince is when this process first saw each learner without a
	// name (RemoveStaleLearners); guarded by promoteMu.
	unnamedSince map[uint64]time.Time
	// q follows whether the member knows a leader (quorum.go); its
	// goroutine stops when qStop closes and closes qDone.
	q            quorum
	qStop, qDone chan struct{}
	stopQuorum   sync.Once
	// clients are those NewClient made, closed with the member.
	clientsMu sync.Mutex
	clients   []*clientv3.Client

	// mu guards the defragmentation counters (space.go).
	mu           sync.Mutex
	defrags      uint64
	defragErrors uint64
	lastDefrag   time.Duration
}

// DefaultMember is the member name used by single-node installs and restore.
const DefaultMember = "otherix"

// Start launches the member and waits until it serves requests.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("etcd: data dir is required")
	}
	// The peer socket's unix:// URL needs an absolute path: in "unix://.dev/x"
	// the relative part would parse as a host name.
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("etcd: data dir: %w", err)
	}
	cfg.DataDir = abs
	if cfg.Name == "" {
		cfg.Name = DefaultMember
	}
	if cfg.MaxTxnOps == 0 {
		cfg.MaxTxnOps = embed.DefaultMaxTxnOps
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = time.Minute
	}
	if cfg.QuotaBytes == 0 {
		cfg.QuotaBytes = DefaultQuotaBytes
	}
	if cfg.AutoCompactionMode == "" {
		cfg.AutoCompactionMode = DefaultAutoCompactionMode
	}
	if cfg.AutoCompactionRetention == "" {
		cfg.AutoCompactionRetention = DefaultAutoCompactionRetention
	}
	if cfg.MaxLearners == 0 {
		cfg.MaxLearners = DefaultMaxLearners
	}
	if err := CheckSpace(cfg.QuotaBytes, cfg.AutoCompactionMode, cfg.AutoCompactionRetention); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: create data dir: %w", err)
	}
	restart := hasMember(cfg.DataDir)
	ec, err := embedConfig(cfg, restart)
	if err != nil {
		return nil, err
	}
	var peerHTTP *http.Client
	if !ec.PeerTLSInfo.Empty() {
		if peerHTTP, err = peerClient(ec.PeerTLSInfo); err != nil {
			return nil, err
		}
	}
	srv, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcd: start member: %w", err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		srv.Close()
		return nil, fmt.Errorf("etcd: member failed while starting: %w", err)
	case <-srv.Server.StopNotify():
		// A member removed from its cluster while it was down is refused
		// by its peers and stops before it is ready.
		cause := (&Member{cfg: cfg, server: srv, peerHTTP: peerHTTP}).StopCause(ctx)
		srv.Close()
		return nil, fmt.Errorf("etcd: member stopped while starting: %w", cause)
	case <-timer.C:
		srv.Close()
		return nil, fmt.Errorf("etcd: member not ready after %s", cfg.StartTimeout)
	case <-ctx.Done():
		srv.Close()
		return nil, ctx.Err()
	}
	m := &Member{cfg: cfg, server: srv, client: v3client.New(srv.Server), peerHTTP: peerHTTP,
		qStop: make(chan struct{}), qDone: make(chan struct{})}
	go func() {
		defer close(m.qDone)
		m.q.watch(func() uint64 { return uint64(srv.Server.Leader()) }, m.qStop)
	}()
	if restart {
		if err := m.reconcilePeerURL(ctx, advertisedPeerURL(ec)); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// HasMember reports whether dataDir already holds an etcd member: a joiner
// runs the join handshake only when it does not.
func HasMember(dataDir string) bool { return hasMember(dataDir) }

// hasMember reports whether dataDir already holds an etcd member (its
// write-ahead log), which makes the membership in it authoritative.
func hasMember(dataDir string) bool {
	ents, err := os.ReadDir(filepath.Join(dataDir, "member-data", "member", "wal"))
	return err == nil && len(ents) > 0
}

func embedConfig(cfg Config, restart bool) (*embed.Config, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = filepath.Join(cfg.DataDir, "member-data")
	ec.MaxTxnOps = cfg.MaxTxnOps
	// Without compaction etcd keeps every revision of every key (each claim,
	// task update and idempotency answer) until it reaches its quota and
	// refuses all writes. The default keeps an hour of history: enough for
	// watches and long polls to resume, bounded for a busy control plane.
	ec.AutoCompactionMode = cfg.AutoCompactionMode
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention
	ec.QuotaBackendBytes = cfg.QuotaBytes
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger())
	ec.MaxLearners = cfg.MaxLearners
	if err := peerConfig(ec, cfg); err != nil {
		return nil, err
	}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.Join != nil && !restart {
		if cfg.Join.InitialCluster == "" {
			return nil, fmt.Errorf("%w: no initial cluster to join", ErrBadJoin)
		}
		ec.ClusterState = embed.ClusterStateFlagExisting
		ec.InitialCluster = cfg.Join.InitialCluster
	}
	if cfg.ClientURL != "" {
		cu, err := url.Parse(cfg.ClientURL)
		if err != nil {
			return nil, fmt.Errorf("etcd: client url %q: %w", cfg.ClientURL, err)
		}
		ec.ListenClientUrls = []url.URL{*cu}
		ec.AdvertiseClientUrls = []url.URL{*cu}
	} else {
		ec.ListenClientUrls = nil
		ec.AdvertiseClientUrls = nil
		ec.ListenClientHttpUrls = nil
	}
	return ec, nil
}

// CheckSpace checks the quota and compaction settings before etcd sees
// them, so a mistake names the setting (etcd.quota_bytes, …) instead of
// failing inside etcd.
func CheckSpace(quotaBytes int64, compactionMode, compactionRetention string) error {
	if quotaBytes < minQuotaBytes {
		return fmt.Errorf("etcd.quota_bytes %d: must be at least %d (1 MiB)", quotaBytes, minQuotaBytes)
	}
	switch compactionMode {
	case "periodic":
		d, err := time.ParseDuration(compactionRetention)
		if err != nil || d <= 0 {
			return fmt.Errorf("etcd.auto_compaction_retention %q: periodic mode wants a positive duration such as 1h", compactionRetention)
		}
	case "revision":
		n, err := strconv.ParseInt(compactionRetention, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("etcd.auto_compaction_retention %q: revision mode wants a positive number of revisions", compactionRetention)
		}
	default:
		return fmt.Errorf("etcd.auto_compaction_mode %q: want periodic or revision", compactionMode)
	}
	return nil
}

// minQuotaBytes keeps the quota above what an empty member already uses.
const minQuotaBytes = 1 << 20

// zapLogger keeps etcd quiet: it logs a great deal at info level that an
// operator of Otherix does not need.
func zapLogger() *zap.Logger {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	zc.Sampling = nil
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	lg, err := zc.Build(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return quietCore{c} }))
	if err != nil {
		return zap.NewNop()
	}
	return lg
}

// expectedMessages are etcd log lines for states this package expects and
// handles: etcd logs them at error level with a stack trace, which would
// read as a failure to an operator.
var expectedMessages = map[string]bool{
	// A learner catching up: RunPromoter retries (ErrLearnerNotReady).
	"rejecting promote learner: learner is not ready": true,
	// A membership change too soon after the last one: AddLearner retries.
	"rejecting member add request; local member has not been connected to majority peers, reconfigure breaks active quorum": true,
}

// quietCore drops expectedMessages and passes everything else through.
type quietCore struct{ zapcore.Core }

func (q quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if expectedMessages[e.Message] {
		return ce
	}
	return q.Core.Check(e, ce)
}

func (q quietCore) With(fields []zapcore.Field) zapcore.Core { return quietCore{q.Core.With(fields)} }

// Client is the in-process client; it needs no network hop.
func (m *Member) Client() *clientv3.Client { return m.client }

// NewClient returns another in-process client of the member, for a user
// that changes it (store.WithQuorum wraps its KV). Close closes it.
func (m *Member) NewClient() *clientv3.Client {
	c := v3client.New(m.server.Server)
	m.clientsMu.Lock()
	m.clients = append(m.clients, c)
	m.clientsMu.Unlock()
	return c
}

// MaxTxnOps is the member's per-transaction operation limit.
func (m *Member) MaxTxnOps() int { return int(m.cfg.MaxTxnOps) }

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.server.Err() }

// Close stops the member and waits for it to release its data dir.
func (m *Member) Close() {
	m.stopQuorum.Do(func() { close(m.qStop) })
	<-m.qDone
	m.clientsMu.Lock()
	for _, c := range m.clients {
		_ = c.Close()
	}
	m.clientsMu.Unlock()
	_ = m.client.Close()
	m.server.Close()
	<-m.server.Server.StopNotify()
}
