// Package enrollment is how a machine joins the cluster and proves who it is
// afterwards: the cluster CA, one-time join tokens, node enrollment (a join
// token and a CSR in, a signed node certificate out), certificate renewal,
// and the authentication of a node by its client certificate. It holds no
// actor: the control plane's gateway routes to it, and hands it a callback
// where a change belongs to a node's actor (a renewal).
//
// Join tokens have one kind today, the node join token (otxj_). The replica
// join token (otxr_, issue #15) is the second: it shares the stored rows,
// their listing, revocation and expiry sweep, and redeem's checks; it adds
// its own parser and what is done once the token is consumed.
package enrollment

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/otherix/otherix/internal/buildinfo"
	"github.com/otherix/otherix/internal/versionskew"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// clusterCAName names the cluster in the CA certificate's subject.
const clusterCAName = "otherix"

// Config wires a Service. Store and CA are required; the rest defaults.
type Config struct {
	// Store holds join tokens and nodes.
	Store *store.Store
	// CA is the cluster CA (LoadCA), shared by every replica through etcd.
	CA *security.CA
	// Log hears every refusal with its reason (default slog.Default()).
	Log *slog.Logger
	// Now is the clock of join tokens and enrollment (default time.Now).
	// Authentication and renewal take the node clock as an argument.
	Now func() time.Time
	// Membership is this replica's etcd member, which replica joins add
	// learners to; nil refuses replica joins (replica_join_unavailable).
	Membership Membership
	// HeartbeatInterval is what an enrolled agent is told to use.
	HeartbeatInterval time.Duration
	// Audit records an audit entry; AuditFailure records a refusal of a
	// caller without valid credentials, folded per source (default: none).
	Audit        func(messages.AuditEntry)
	AuditFailure func(messages.AuditEntry)
	// Version is the control plane's, which agents are held to by the
	// version skew rule (internal/versionskew); default buildinfo.Version().
	Version string
}

// Service enrolls and authenticates nodes. It is safe for concurrent use.
type Service struct {
	cfg Config
	// nodes caches verified node identities (nodeauth.go).
	nodes identityCache
	// skewLogged holds, per node name, the agent version last refused, so
	// an agent heartbeating at a refused version is logged once, not at
	// every beat.
	skewLogged sync.Map
}

// New returns a Service over cfg.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Audit == nil {
		cfg.Audit = func(messages.AuditEntry) {}
	}
	if cfg.AuditFailure == nil {
		cfg.AuditFailure = func(messages.AuditEntry) {}
	}
	if cfg.Version == "" {
		cfg.Version = buildinfo.Version()
	}
	return &Service{cfg: cfg}
}

// CheckAgentVersion applies the version skew rule to an agent of node at
// version: nil when they may work together (or either side is a
// development build, which the rule does not compare), a version_skew
// error naming both versions and what to upgrade otherwise. Enrollment and
// every heartbeat ask it, so an agent upgraded past the control plane is
// refused from its next beat on instead of being read in part.
func (s *Service) CheckAgentVersion(node, version string) error {
	_, err := versionskew.Agent(s.cfg.Version, version)
	if err == nil {
		s.skewLogged.Delete(node)
		return nil
	}
	if prev, loaded := s.skewLogged.Swap(node, version); !loaded || prev != version {
		s.cfg.Log.Warn("agent refused: version skew", "node", node, "agent_version", version,
			"control_plane_version", s.cfg.Version, "err", err)
	}
	return err
}

// LoadCA loads the cluster CA from etcd, creating it at first boot. Callers
// that need it before the control plane starts (to build the agent client)
// load the same CA with it.
func LoadCA(ctx context.Context, st *store.Store, now time.Time) (*security.CA, error) {
	certPEM, keyPEM, err := st.LoadOrCreateCA(ctx, func() ([]byte, []byte, error) {
		ca, err := security.NewCA(clusterCAName, now)
		if err != nil {
			return nil, nil, err
		}
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return nil, nil, err
		}
		return ca.CertPEM(), keyPEM, nil
	})
	if err != nil {
		return nil, fmt.Errorf("load cluster ca: %w", err)
	}
	ca, err := security.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load cluster ca: %w", err)
	}
	return ca, nil
}

// CA is the cluster certificate authority.
func (s *Service) CA() *security.CA { return s.cfg.CA }
