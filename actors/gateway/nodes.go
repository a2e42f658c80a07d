package gateway

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Join token lifetimes.
const (
	DefaultJoinTokenTTL = time.Hour
	MaxJoinTokenTTL     = 24 * time.Hour
)

// HeartbeatInterval is the interval an enrolled agent is told to use.
const HeartbeatInterval = 30 * time.Second

// clusterCAName names the cluster in the CA certificate's subject.
const clusterCAName = "otherix"

// errInvalidJoinToken is the one answer to every join-token problem: unknown,
// used, revoked, expired, a wrong secret or a wrong CA fingerprint all look
// alike to the caller. The log says which it was.
var errInvalidJoinToken = &messages.Error{Kind: messages.KindUnauthenticated, Code: "invalid_join_token",
	Message: "the join token is invalid, expired or already used"}

// LoadCA loads the cluster CA from etcd, creating it at first boot. The
// gateway loads it itself; callers that need it before Start (to build the
// agent client) load the same CA with it.
func LoadCA(ctx context.Context, st *store.Store, now time.Time) (*security.CA, error) {
	return loadCA(ctx, st, now)
}

// loadCA loads the cluster CA from etcd, creating it at first boot.
func loadCA(ctx context.Context, st *store.Store, now time.Time) (*security.CA, error) {
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

// CA is the cluster certificate authority, shared by every replica: the API
// issues its listener certificates and node certificates with it.
func (g *Gateway) CA() *security.CA { return g.ca }

// CAPEM is the cluster CA certificate as PEM.
func (g *Gateway) CAPEM() []byte { return g.ca.CertPEM() }

// CAFingerprint is the cluster CA's SHA-256 fingerprint (lowercase hex).
func (g *Gateway) CAFingerprint() string { return g.ca.Fingerprint() }

// CreateJoinToken creates a one-time join token and returns it in plaintext,
// the only time it is shown. Only its hash is stored.
func (g *Gateway) CreateJoinToken(ctx context.Context, p messages.Principal, req messages.CreateJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	ttl := DefaultJoinTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		switch {
		case err != nil:
			return nil, invalidTTL("not a duration such as 1h")
		case d <= 0:
			return nil, invalidTTL("must be positive")
		case d > MaxJoinTokenTTL:
			return nil, invalidTTL("must be at most 24h")
		}
		ttl = d
	}
	if req.NodeName != "" {
		if err := messages.ValidateName("node_name", req.NodeName); err != nil {
			return nil, err
		}
	}
	token, id, hash, err := security.NewJoinToken(g.ca.Fingerprint())
	if err != nil {
		return nil, err
	}
	now := g.cfg.Identity.Now().UTC()
	j := &messages.JoinToken{ID: id, Hash: hash, NodeName: req.NodeName, CreatedBy: p.UserID,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := g.st.Commit(ctx, store.CreateJoinToken(store.NewTxn(), j)); err != nil {
		return nil, err
	}
	g.id.Audit(messages.AuditEntry{Actor: p.UserID, Action: "node.join_token.create", Target: id, Result: "ok"})
	return &messages.CreatedJoinToken{Token: token, JoinToken: joinTokenView(j)}, nil
}

func joinTokenView(j *messages.JoinToken) messages.JoinTokenView {
	return messages.JoinTokenView{ID: j.ID, NodeName: j.NodeName, CreatedBy: j.CreatedBy,
		CreatedAt: j.CreatedAt, ExpiresAt: j.ExpiresAt}
}

// ListJoinTokens lists join tokens not yet used, revoked or swept (expired
// ones stay listed until the cleanup loop removes them).
func (g *Gateway) ListJoinTokens(ctx context.Context, page store.Page) ([]messages.JoinTokenView, string, error) {
	js, next, err := g.st.ListJoinTokens(ctx, page)
	if err != nil {
		return nil, "", err
	}
	out := make([]messages.JoinTokenView, 0, len(js))
	for _, j := range js {
		out = append(out, joinTokenView(j))
	}
	return out, next, nil
}

// RevokeJoinToken deletes a join token; an unknown id is not found.
func (g *Gateway) RevokeJoinToken(ctx context.Context, id string) error {
	if len(id) != security.TokenIDLen || strings.ContainsAny(id, "/\x00") {
		return messages.NotFound("join token", id)
	}
	return g.st.RevokeJoinToken(ctx, id)
}

// Enroll consumes a join token and signs the node's CSR; the node is
// recorded, pending its first heartbeat, in the transaction that consumes
// the token. Every refusal is logged with the node name and the reason.
func (g *Gateway) Enroll(ctx context.Context, req messages.EnrollRequest, source string) (*messages.EnrollResponse, error) {
	name := req.Name
	if len(name) > messages.MaxNameLength+8 {
		name = name[:messages.MaxNameLength+8] + "…"
	}
	actor := "anonymous"
	refuse := func(err *messages.Error, reason string) (*messages.EnrollResponse, error) {
		g.log.Warn("node enrollment refused", "node", name, "reason", reason, "source", source)
		// The token id in the actor is the caller's choice: folded per source.
		g.id.AuditFailure(messages.AuditEntry{Actor: actor, Action: "node.enroll", Target: name, Result: err.Code, Source: source})
		return nil, err
	}

	tok, err := security.ParseJoinToken(strings.TrimSpace(req.Token))
	if err != nil {
		return refuse(errInvalidJoinToken, "malformed_token")
	}
	actor = "join_token:" + tok.ID
	if tok.CAFingerprint != g.ca.Fingerprint() {
		return refuse(errInvalidJoinToken, "wrong_ca_fingerprint")
	}
	j, err := g.st.GetJoinToken(ctx, tok.ID)
	if messages.KindOf(err) == messages.KindNotFound {
		return refuse(errInvalidJoinToken, "unknown_or_used_token")
	}
	if err != nil {
		return nil, err
	}
	if !security.TokenMatches(j.Hash, tok.Secret) {
		return refuse(errInvalidJoinToken, "wrong_secret")
	}
	now := g.cfg.Identity.Now().UTC()
	if !now.Before(j.ExpiresAt) {
		return refuse(errInvalidJoinToken, "expired_token")
	}
	if j.NodeName != "" && req.Name != j.NodeName {
		return refuse(&messages.Error{Kind: messages.KindForbidden, Code: "node_name_not_allowed",
			Message: "this join token may only enroll the node it names",
			Details: map[string]any{"field": "name"}}, "node_name_not_allowed")
	}
	if err := messages.ValidateName("name", req.Name); err != nil {
		var me *messages.Error
		errors.As(err, &me)
		return refuse(me, "invalid_node_name")
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return refuse(csrPolicy(security.ReasonMalformedCSR), security.ReasonMalformedCSR)
	}
	certPEM, fp, err := g.ca.SignNodeCSR(block.Bytes, req.Name, now, 0)
	var pe *security.PolicyError
	if errors.As(err, &pe) {
		g.log.Warn("node csr refused", "node", name, "reason", pe.Reason, "detail", pe.Detail)
		return refuse(csrPolicy(pe.Reason), pe.Reason)
	}
	if err != nil {
		return nil, fmt.Errorf("sign node csr: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse node certificate: %w", err)
	}
	n := &messages.Node{ID: messages.NewID(), Name: req.Name, CertFingerprint: fp, CertNotAfter: cert.NotAfter.UTC(),
		Phase: messages.NodePending, Arch: req.Arch, AgentVersion: req.AgentVersion, EnrolledAt: now, UpdatedAt: now}
	err = g.st.Enroll(ctx, j.ID, j.Revision, n)
	switch {
	case errors.Is(err, store.ErrJoinTokenConsumed):
		return refuse(errInvalidJoinToken, "token_used_concurrently")
	case err != nil:
		var me *messages.Error
		if errors.As(err, &me) && me.Code == "node_name_conflict" {
			return refuse(me, "node_name_conflict")
		}
		return nil, err
	}
	g.log.Info("node enrolled", "node", n.Name, "id", n.ID, "source", source, "cert_fingerprint", fp)
	g.id.Audit(messages.AuditEntry{Actor: actor, Action: "node.enroll", Target: n.Name, Result: "ok", Source: source})
	return &messages.EnrollResponse{Node: *n, Certificate: string(certPEM), CA: string(g.ca.CertPEM()),
		HeartbeatInterval: g.cfg.Nodes.HeartbeatInterval.String()}, nil
}

func csrPolicy(reason string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "csr_policy",
		Message: "the certificate request breaks the node certificate policy: " + reason,
		Details: map[string]any{"reason": reason}}
}

// sweepJoinTokens removes expired join tokens (part of the cleanup loop).
func (g *Gateway) sweepJoinTokens(ctx context.Context) error {
	n, err := g.st.SweepJoinTokens(ctx, g.st.Now())
	if n > 0 {
		g.log.Info("join token cleanup", "expired", n)
	}
	return err
}
