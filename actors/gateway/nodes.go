package gateway

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// The cluster CA, join tokens, enrollment and node certificates live in
// package enrollment; these methods route to it.

// HeartbeatInterval is the interval an enrolled agent is told to use.
const HeartbeatInterval = 30 * time.Second

// CA is the cluster certificate authority, shared by every replica: the API
// issues its listener certificates and node certificates with it.
func (g *Gateway) CA() *security.CA { return g.enroll.CA() }

// CAPEM is the cluster CA certificate as PEM.
func (g *Gateway) CAPEM() []byte { return g.enroll.CA().CertPEM() }

// CAFingerprint is the cluster CA's SHA-256 fingerprint (lowercase hex).
func (g *Gateway) CAFingerprint() string { return g.enroll.CA().Fingerprint() }

// CreateJoinToken creates a one-time join token and returns it in plaintext,
// the only time it is shown (enrollment.Service.CreateJoinToken).
func (g *Gateway) CreateJoinToken(ctx context.Context, p messages.Principal, req messages.CreateJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	return g.enroll.CreateJoinToken(ctx, p, req)
}

// ListJoinTokens lists join tokens not yet used, revoked or swept.
func (g *Gateway) ListJoinTokens(ctx context.Context, page store.Page) ([]messages.JoinTokenView, string, error) {
	return g.enroll.ListJoinTokens(ctx, page)
}

// RevokeJoinToken deletes a join token; an unknown id is not found.
func (g *Gateway) RevokeJoinToken(ctx context.Context, id string) error {
	return g.enroll.RevokeJoinToken(ctx, id)
}

// Enroll consumes a join token and signs the node's CSR
// (enrollment.Service.Enroll).
func (g *Gateway) Enroll(ctx context.Context, req messages.EnrollRequest, source string) (*messages.EnrollResponse, error) {
	return g.enroll.Enroll(ctx, req, source)
}

// RenewNodeCert signs a new certificate for the node that cert names and
// records it through the node's actor (enrollment.Service.RenewNodeCert).
func (g *Gateway) RenewNodeCert(ctx context.Context, cert *x509.Certificate, req messages.RenewRequest) (*messages.RenewResponse, error) {
	return g.enroll.RenewNodeCert(ctx, cert, req, g.cfg.Nodes.Now(), func(r enrollment.Renewal) error {
		_, err := g.askNode(r.NodeID, node.RenewCert{Presented: r.Presented, Fingerprint: r.Fingerprint, NotAfter: r.NotAfter, Now: r.Now})
		return err
	})
}

// sweepJoinTokens removes expired join tokens (part of the cleanup loop).
func (g *Gateway) sweepJoinTokens(ctx context.Context) error {
	return g.enroll.SweepJoinTokens(ctx)
}
