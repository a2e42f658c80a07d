package enrollment

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/otherix/otherix/internal/versionskew"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Membership is the etcd membership a replica join changes: this replica's
// embedded member (*etcd.Member).
type Membership interface {
	// AddLearner adds a member at peerURL as a learner and returns its id
	// and the initial-cluster string it must start with.
	AddLearner(ctx context.Context, name, peerURL string) (id uint64, initialCluster string, err error)
	// Members lists the membership (this replica's view).
	Members(ctx context.Context) ([]etcd.MemberInfo, error)
	// ClusterID is the etcd cluster id.
	ClusterID() uint64
	// Remove takes a member out of the cluster, keeping a healthy quorum
	// of voters unless force.
	Remove(ctx context.Context, id uint64, force bool) error
}

var _ Membership = (*etcd.Member)(nil)

// Replica join refusals, beyond invalid_join_token and csr_policy.
var (
	errReplicaNameConflict = &messages.Error{Kind: messages.KindConflict, Code: "replica_name_conflict",
		Message: "a member of this cluster already has this name", Details: map[string]any{"field": "name"}}
	errPeerURLConflict = &messages.Error{Kind: messages.KindConflict, Code: "peer_url_conflict",
		Message: "a member of this cluster already has this peer URL", Details: map[string]any{"field": "peer_url"}}
	errNoPeerListener = &messages.Error{Kind: messages.KindConflict, Code: "peer_listener_required",
		Message: "this replica has no peer listener (start it with --peer-listen) so a new member could not reach it"}
	errJoinUnavailable = &messages.Error{Kind: messages.KindUnavailable, Code: "replica_join_unavailable",
		Message: "this control plane does not accept replica joins"}
)

// clusterMismatch refuses a joiner whose data dir holds a member of
// another cluster than this one.
func clusterMismatch(dataDirCluster, own string) *messages.Error {
	if len(dataDirCluster) > 32 {
		dataDirCluster = dataDirCluster[:32] + "…"
	}
	return &messages.Error{Kind: messages.KindConflict, Code: "cluster_mismatch",
		Message: fmt.Sprintf("the joiner's data dir holds a member of cluster %s, this is cluster %s; join with an empty data dir", dataDirCluster, own),
		Details: map[string]any{"cluster_id": own, "data_dir_cluster_id": dataDirCluster}}
}

// joinGrace is how long a recorded join without a member blocks another
// join for the same name: longer than AddLearner's wait for the membership
// to spread and the joiner's own request timeout.
const joinGrace = 2 * time.Minute

// invalidPeerURL refuses a peer URL that is not https://HOST:PORT.
func invalidPeerURL(reason string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "invalid_peer_url",
		Message: "peer_url: want https://HOST:PORT (" + reason + ")", Details: map[string]any{"field": "peer_url"}}
}

// checkPeerURL accepts exactly https://HOST:PORT: no user, path, query or
// fragment, a numeric port, a host.
func checkPeerURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return invalidPeerURL("does not parse")
	case u.Scheme != "https":
		return invalidPeerURL("scheme must be https")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return invalidPeerURL("nothing may follow the port")
	case u.Hostname() == "":
		return invalidPeerURL("no host")
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil || p < 1 || p > 65535 {
		return invalidPeerURL("no valid port")
	}
	return nil
}

// JoinReplica admits a new otherix-api replica: it redeems a replica join
// token, checks the name and peer URL against the membership, signs the
// peer CSR, records the replica in the transaction that consumes the token,
// then adds the member as a learner. If the add fails after the commit, the
// token is spent, the row is removed and no member exists: a retry with a
// fresh token works. A row left by a join that died between its commit and
// the add blocks its name for joinGrace, then is taken over.
func (s *Service) JoinReplica(ctx context.Context, req messages.ReplicaJoinRequest, source string) (*messages.ReplicaJoinResponse, error) {
	name := req.Name
	if len(name) > messages.MaxNameLength+8 {
		name = name[:messages.MaxNameLength+8] + "…"
	}
	actor := "anonymous"
	refuse := func(err *messages.Error, reason string) (*messages.ReplicaJoinResponse, error) {
		s.cfg.Log.Warn("replica join refused", "replica", name, "reason", reason, "source", source)
		s.cfg.AuditFailure(messages.AuditEntry{Actor: actor, Action: "replica.join", Target: name, Result: err.Code, Source: source})
		return nil, err
	}
	if req.MemberOf != "" {
		// A restart with --join of a data dir that holds a member: only
		// the cluster ids are compared. The id is no secret (etcd sends it
		// with every peer message); nothing is spent or added.
		if s.cfg.Membership == nil {
			return refuse(errJoinUnavailable, "no_membership")
		}
		own := fmt.Sprintf("%x", s.cfg.Membership.ClusterID())
		if !strings.EqualFold(strings.TrimLeft(req.MemberOf, "0"), own) {
			return refuse(clusterMismatch(req.MemberOf, own), "cluster_mismatch")
		}
		return &messages.ReplicaJoinResponse{ClusterID: own}, nil
	}
	tok, err := security.ParseReplicaJoinToken(strings.TrimSpace(req.Token))
	if err != nil {
		return refuse(errInvalidJoinToken, "malformed_token")
	}
	actor = "join_token:" + tok.ID
	now := s.cfg.Now().UTC()
	j, reason, err := s.redeem(ctx, tok, messages.JoinTokenKindReplica, now)
	if reason != "" {
		return refuse(errInvalidJoinToken, reason)
	}
	if err != nil {
		return nil, err
	}
	if s.cfg.Membership == nil {
		return refuse(errJoinUnavailable, "no_membership")
	}
	if err := messages.ValidateName("name", req.Name); err != nil {
		var me *messages.Error
		errors.As(err, &me)
		return refuse(me, "invalid_replica_name")
	}
	if err := checkPeerURL(req.PeerURL); err != nil {
		var me *messages.Error
		errors.As(err, &me)
		return refuse(me, "invalid_peer_url")
	}
	members, err := s.cfg.Membership.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("replica join: list members: %w", err)
	}
	if err := s.checkJoinerVersion(ctx, req.Version, members); err != nil {
		var me *messages.Error
		errors.As(err, &me)
		s.cfg.Log.Warn("replica join refused: version skew between replicas", "code", versionskew.Code, "replica", name,
			"version", req.Version, "member", me.Details["member"], "member_version", me.Details["member_version"])
		return refuse(me, versionskew.Code)
	}
	for _, m := range members {
		if m.Self && strings.HasPrefix(m.PeerURL, "unix") {
			return refuse(errNoPeerListener, "no_peer_listener")
		}
		if m.Name == req.Name {
			return refuse(errReplicaNameConflict, "replica_name_conflict")
		}
		if samePeer(m.PeerURL, req.PeerURL) {
			return refuse(errPeerURLConflict, "peer_url_conflict")
		}
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return refuse(csrPolicy(security.ReasonMalformedCSR), security.ReasonMalformedCSR)
	}
	certPEM, fp, err := s.cfg.CA.SignReplicaCSR(block.Bytes, req.Name, now, 0)
	var pe *security.PolicyError
	if errors.As(err, &pe) {
		s.cfg.Log.Warn("replica csr refused", "replica", name, "reason", pe.Reason, "detail", pe.Detail)
		return refuse(csrPolicy(pe.Reason), pe.Reason)
	}
	if err != nil {
		return nil, fmt.Errorf("sign replica csr: %w", err)
	}
	r := &messages.Replica{Name: req.Name, PeerURL: req.PeerURL, APIURL: req.APIURL, AgentURL: req.AgentURL, JoinedAt: now,
		Version: req.Version}
	prev, err := s.cfg.Store.GetReplica(ctx, req.Name)
	switch {
	case err == nil && now.Sub(prev.JoinedAt) < joinGrace:
		// Another join for this name is under way (recorded, not yet a
		// member): the membership check above cannot see it.
		return refuse(errReplicaNameConflict, "replica_join_in_progress")
	case err == nil:
		// A row without a member, older than any join in flight: a join
		// that died after its commit. Taken over.
		r.Revision = prev.Revision
	case messages.KindOf(err) != messages.KindNotFound:
		return nil, err
	}
	switch err := s.cfg.Store.JoinReplica(ctx, j.ID, j.Revision, r); {
	case errors.Is(err, store.ErrJoinTokenConsumed):
		return refuse(errInvalidJoinToken, "token_used_concurrently")
	case errors.Is(err, store.ErrReplicaChanged):
		return refuse(errReplicaNameConflict, "replica_name_conflict")
	case err != nil:
		return nil, err
	}
	id, initial, err := s.cfg.Membership.AddLearner(ctx, req.Name, req.PeerURL)
	if err != nil {
		// No member was added (etcd refused the add, or it did not commit
		// before ctx ended).
		// The token is spent; the row goes, so a retry with a fresh
		// token is not refused as a join in progress.
		if derr := s.cfg.Store.DeleteReplica(context.WithoutCancel(ctx), r); derr != nil {
			s.cfg.Log.Warn("replica join: remove the row of a failed join", "replica", req.Name, "err", derr)
		}
		s.cfg.Log.Error("replica join: add learner failed; the joiner must retry with a new token",
			"replica", req.Name, "peer_url", req.PeerURL, "err", err)
		s.cfg.Audit(messages.AuditEntry{Actor: actor, Action: "replica.join", Target: req.Name, Result: "member_add_failed", Source: source})
		return nil, &messages.Error{Kind: messages.KindUnavailable, Code: "member_add_failed",
			Message: "the replica was recorded but etcd did not add it as a learner; retry with a new replica join token", Err: err}
	}
	s.cfg.Log.Info("replica joined as learner", "replica", req.Name, "peer_url", req.PeerURL, "member_id", fmt.Sprintf("%x", id),
		"source", source, "cert_fingerprint", fp)
	s.cfg.Audit(messages.AuditEntry{Actor: actor, Action: "replica.join", Target: req.Name, Result: "ok", Source: source})
	return &messages.ReplicaJoinResponse{CA: string(s.cfg.CA.CertPEM()), Certificate: string(certPEM),
		InitialCluster: initial, ClusterID: fmt.Sprintf("%x", s.cfg.Membership.ClusterID()), MemberID: fmt.Sprintf("%x", id)}, nil
}

// checkJoinerVersion applies the replica rule (versionskew.Replica) to a
// joiner: its version against this replica's and every other member's
// recorded one. It runs before the token is spent or the CSR signed, so
// the token still works for a joiner of a fitting version.
func (s *Service) checkJoinerVersion(ctx context.Context, version string, members []etcd.MemberInfo) error {
	if version == "" {
		return nil
	}
	rows, err := s.cfg.Store.ListReplicas(ctx)
	if err != nil {
		return err
	}
	isMember := make(map[string]bool, len(members))
	others := map[string]string{}
	for _, m := range members {
		isMember[m.Name] = m.Name != ""
		if m.Self && m.Name != "" {
			// This replica's own version is what it runs, whatever its
			// row says.
			others[m.Name] = s.cfg.Version
		}
	}
	for _, r := range rows {
		if _, set := others[r.Name]; isMember[r.Name] && !set {
			others[r.Name] = r.Version
		}
	}
	_, err = versionskew.Members(version, others)
	return err
}

// samePeer compares two peer URLs by scheme and host:port, ignoring case
// and a trailing slash.
func samePeer(a, b string) bool {
	ua, errA := url.Parse(a)
	ub, errB := url.Parse(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(hostPort(ua), hostPort(ub))
}

func hostPort(u *url.URL) string { return net.JoinHostPort(u.Hostname(), u.Port()) }

// ClusterMembers lists the etcd members with the API and agent URLs their
// replicas recorded (empty for a replica that has not recorded any, such as
// a learner not yet serving). Without a membership (tests, or a control
// plane built without one) it answers replica_join_unavailable.
func (s *Service) ClusterMembers(ctx context.Context) ([]messages.ClusterMember, error) {
	if s.cfg.Membership == nil {
		return nil, errJoinUnavailable
	}
	members, err := s.cfg.Membership.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	rows, err := s.cfg.Store.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]*messages.Replica, len(rows))
	for _, r := range rows {
		byName[r.Name] = r
	}
	out := make([]messages.ClusterMember, 0, len(members))
	for _, m := range members {
		cm := messages.ClusterMember{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), Role: m.Role, IsLeader: m.IsLeader,
			Healthy: m.Healthy, PeerURL: m.PeerURL, Note: m.Note, RaftIndexLag: m.RaftIndexLag, EtcdVersion: m.EtcdVersion}
		if r := byName[m.Name]; r != nil && m.Name != "" {
			cm.APIURL, cm.AgentURL, cm.Version = r.APIURL, r.AgentURL, r.Version
		}
		out = append(out, cm)
	}
	return out, nil
}
