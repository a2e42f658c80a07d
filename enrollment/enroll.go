package enrollment

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/otherix/otherix/internal/versionskew"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// ReservedNodeName cannot name a node: GET /v1/nodes/join-tokens lists
// join tokens, so a node of that name could never be read.
const ReservedNodeName = "join-tokens"

// Enroll consumes a node join token and signs the node's CSR; the node is
// recorded, pending its first heartbeat, in the transaction that consumes
// the token. Every refusal is logged with the node name and the reason, and
// audited; source is the caller's address.
func (s *Service) Enroll(ctx context.Context, req messages.EnrollRequest, source string) (*messages.EnrollResponse, error) {
	name := req.Name
	if len(name) > messages.MaxNameLength+8 {
		name = name[:messages.MaxNameLength+8] + "…"
	}
	actor := "anonymous"
	refuse := func(err *messages.Error, reason string) (*messages.EnrollResponse, error) {
		s.cfg.Log.Warn("node enrollment refused", "node", name, "reason", reason, "source", source)
		// The token id in the actor is the caller's choice: folded per source.
		s.cfg.AuditFailure(messages.AuditEntry{Actor: actor, Action: "node.enroll", Target: name, Result: err.Code, Source: source})
		return nil, err
	}

	tok, err := security.ParseJoinToken(strings.TrimSpace(req.Token))
	if err != nil {
		return refuse(errInvalidJoinToken, "malformed_token")
	}
	actor = "join_token:" + tok.ID
	now := s.cfg.Now().UTC()
	j, reason, err := s.redeem(ctx, tok, messages.JoinTokenKindNode, now)
	if reason != "" {
		return refuse(errInvalidJoinToken, reason)
	}
	if err != nil {
		return nil, err
	}
	if j.NodeName != "" && req.Name != j.NodeName {
		return refuse(&messages.Error{Kind: messages.KindForbidden, Code: "node_name_not_allowed",
			Message: "this join token may only enroll the node it names",
			Details: map[string]any{"field": "name"}}, "node_name_not_allowed")
	}
	// Before anything is signed or spent: the token stays usable for the
	// agent of the right version.
	if _, err := versionskew.Agent(s.cfg.Version, req.AgentVersion); err != nil {
		var me *messages.Error
		errors.As(err, &me)
		return refuse(me, versionskew.Code)
	}
	if err := messages.ValidateName("name", req.Name); err != nil {
		var me *messages.Error
		errors.As(err, &me)
		return refuse(me, "invalid_node_name")
	}
	if req.Name == ReservedNodeName {
		return refuse(messages.Invalid("name", "%q is reserved: /v1/nodes/%s is the join tokens' path", req.Name, req.Name),
			"invalid_node_name")
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return refuse(csrPolicy(security.ReasonMalformedCSR), security.ReasonMalformedCSR)
	}
	certPEM, fp, err := s.cfg.CA.SignNodeCSR(block.Bytes, req.Name, now, 0)
	var pe *security.PolicyError
	if errors.As(err, &pe) {
		s.cfg.Log.Warn("node csr refused", "node", name, "reason", pe.Reason, "detail", pe.Detail)
		return refuse(csrPolicy(pe.Reason), pe.Reason)
	}
	if err != nil {
		return nil, fmt.Errorf("sign node csr: %w", err)
	}
	cert, err := parseIssued(certPEM)
	if err != nil {
		return nil, err
	}
	n := &messages.Node{ID: messages.NewID(), Name: req.Name, CertFingerprint: fp, CertNotAfter: cert.NotAfter.UTC(),
		Phase: messages.NodePending, Arch: req.Arch, AgentVersion: req.AgentVersion, EnrolledAt: now, UpdatedAt: now}
	err = s.cfg.Store.Enroll(ctx, j.ID, j.Revision, n)
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
	s.cfg.Log.Info("node enrolled", "node", n.Name, "id", n.ID, "source", source, "cert_fingerprint", fp)
	s.cfg.Audit(messages.AuditEntry{Actor: actor, Action: "node.enroll", Target: n.Name, Result: "ok", Source: source})
	return &messages.EnrollResponse{Node: *n, Certificate: string(certPEM), CA: string(s.cfg.CA.CertPEM()),
		HeartbeatInterval: s.cfg.HeartbeatInterval.String()}, nil
}

// parseIssued parses a certificate the CA just signed.
func parseIssued(certPEM []byte) (*x509.Certificate, error) {
	cb, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse node certificate: %w", err)
	}
	return cert, nil
}
