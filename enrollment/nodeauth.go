package enrollment

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// NodeIdentity is a node authenticated by its client certificate.
type NodeIdentity struct {
	// ID and Name are the node's.
	ID, Name string
	// Fingerprint is the presented certificate's (lowercase hex SHA-256).
	Fingerprint string
}

// Authenticate authenticates an agent by its client certificate: the node it
// names must be enrolled with this very certificate recorded (or the one a
// renewal just replaced), and the certificate must chain to the cluster CA
// and be valid at now (the node clock). Refusals are logged under what with
// the node name and the reason. A verified identity is cached for
// nodeIdentityTTL.
func (s *Service) Authenticate(ctx context.Context, cert *x509.Certificate, now time.Time, what string) (NodeIdentity, error) {
	name, err := security.NodeNameFromCert(cert)
	if err != nil {
		cn := ""
		if cert != nil {
			cn = cert.Subject.CommonName
		}
		s.cfg.Log.Warn(what, "node", "", "cn", cn, "reason", errNotNodeCert.Code)
		return NodeIdentity{}, errNotNodeCert
	}
	refuse := func(e *messages.Error, detail ...any) (NodeIdentity, error) {
		s.cfg.Log.Warn(what, append([]any{"node", name, "reason", e.Code}, detail...)...)
		return NodeIdentity{}, e
	}
	fp := security.Fingerprint(cert)
	if id, ok := s.nodes.get(name, fp, now); ok {
		return NodeIdentity{ID: id, Name: name, Fingerprint: fp}, nil
	}
	n, err := s.cfg.Store.NodeByName(ctx, name)
	if messages.KindOf(err) == messages.KindNotFound {
		return refuse(ErrUnknownNode)
	}
	if err != nil {
		return NodeIdentity{}, err
	}
	if fp != n.CertFingerprint && (n.PrevCertFingerprint == "" || fp != n.PrevCertFingerprint) {
		return refuse(errCertNotRecorded, "cert_fingerprint", fp)
	}
	if err := security.VerifyNodeCert(s.cfg.CA, cert, now); err != nil {
		return refuse(errUntrustedCert, "err", err)
	}
	s.nodes.put(name, fp, n.ID, cert)
	return NodeIdentity{ID: n.ID, Name: name, Fingerprint: fp}, nil
}

// Forget drops the cached identity of the node named name: its next
// certificate is checked against etcd again (after a renewal, or when the
// node turned out to be deleted).
func (s *Service) Forget(name string) { s.nodes.drop(name) }

// Renewal is a node certificate just signed by RenewNodeCert, for the caller
// to record on the node.
type Renewal struct {
	// NodeID is the node's id.
	NodeID string
	// Presented is the fingerprint of the certificate the renewal was asked
	// with; Fingerprint and NotAfter are the new certificate's.
	Presented, Fingerprint string
	NotAfter               time.Time
	// Now is the node clock at the renewal.
	Now time.Time
}

// RenewNodeCert signs a new certificate for the node that cert (its current
// one, presented over mutual TLS) names, for the key of req's CSR, and has
// record write it to the node (in the control plane, through the node's
// actor). The presented certificate stays valid for heartbeats until the
// node uses the new one. now is the node clock.
func (s *Service) RenewNodeCert(ctx context.Context, cert *x509.Certificate, req messages.RenewRequest, now time.Time,
	record func(Renewal) error) (*messages.RenewResponse, error) {
	who, err := s.Authenticate(ctx, cert, now, "certificate renewal refused")
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		s.cfg.Log.Warn("certificate renewal refused", "node", who.Name, "reason", security.ReasonMalformedCSR)
		return nil, csrPolicy(security.ReasonMalformedCSR)
	}
	// Same policy and validity as at enrollment: CN node-<name>, our name only.
	certPEM, newFP, err := s.cfg.CA.SignNodeCSR(block.Bytes, who.Name, now, 0)
	var pe *security.PolicyError
	if errors.As(err, &pe) {
		s.cfg.Log.Warn("certificate renewal refused", "node", who.Name, "reason", pe.Reason, "detail", pe.Detail)
		return nil, csrPolicy(pe.Reason)
	}
	if err != nil {
		return nil, fmt.Errorf("sign node csr: %w", err)
	}
	issued, err := parseIssued(certPEM)
	if err != nil {
		return nil, err
	}
	if err := record(Renewal{NodeID: who.ID, Presented: who.Fingerprint, Fingerprint: newFP, NotAfter: issued.NotAfter, Now: now}); err != nil {
		return nil, err
	}
	s.nodes.drop(who.Name)
	return &messages.RenewResponse{Certificate: string(certPEM), CA: string(s.cfg.CA.CertPEM())}, nil
}

// nodeIdentityTTL is how long a heartbeat reuses a node's verified identity
// (certificate fingerprint and id) instead of reading etcd and verifying the
// chain again, which were a third of a heartbeat's control-plane CPU. It must
// outlast the heartbeat interval or the cache never hits: the 10,000-node
// simulation at a 30 s interval showed a 5 s TTL missing on every beat. A
// deleted node is still refused at once (its actor answers not found, and
// the gateway calls Forget), a renewal on this replica drops the entry, and
// a new certificate has another fingerprint and misses. What it costs: after
// a renewal on another replica, this one may accept the replaced (still
// unexpired) certificate of the same node for up to the TTL.
const nodeIdentityTTL = 10 * time.Minute

// identityCache holds, per node name, the fingerprint of the certificate
// last verified for it and the node id. The zero value is ready.
type identityCache struct {
	mu    sync.Mutex
	nodes map[string]cachedNode
}

type cachedNode struct {
	fp, id              string
	until               time.Time // wall clock
	notBefore, notAfter time.Time // the certificate's, on the node clock
}

func (c *identityCache) get(name, fp string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.nodes[name]
	if !ok || e.fp != fp || !time.Now().Before(e.until) || now.Before(e.notBefore) || now.After(e.notAfter) {
		return "", false
	}
	return e.id, true
}

func (c *identityCache) put(name, fp, id string, cert *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes == nil {
		c.nodes = make(map[string]cachedNode)
	}
	if len(c.nodes) >= 100_000 {
		clear(c.nodes)
	}
	c.nodes[name] = cachedNode{fp: fp, id: id, until: time.Now().Add(nodeIdentityTTL), notBefore: cert.NotBefore, notAfter: cert.NotAfter}
}

func (c *identityCache) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, name)
}
