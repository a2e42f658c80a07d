package agentclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// RenewingCert holds the control plane's client certificate and issues a new
// one, lazily at the next handshake, once less than a third of the current
// one's validity remains. Its Get is what New takes.
type RenewingCert struct {
	issue func(now time.Time) (tls.Certificate, error)
	now   func() time.Time

	mu  sync.Mutex
	cur *tls.Certificate
}

// NewRenewingCert returns a holder that issues with issue (for instance
// ca.IssueClientCert(security.ControlPlaneCN, now, 0)) on clock now (nil for
// time.Now).
func NewRenewingCert(issue func(now time.Time) (tls.Certificate, error), now func() time.Time) *RenewingCert {
	if now == nil {
		now = time.Now
	}
	return &RenewingCert{issue: issue, now: now}
}

// Get returns the current certificate, issuing one first when there is
// none or the current one has less than a third of its validity left.
func (r *RenewingCert) Get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.cur != nil && !dueForRenewal(r.cur.Leaf, now) {
		return r.cur, nil
	}
	c, err := r.issue(now)
	if err != nil {
		if r.cur != nil && now.Before(r.cur.Leaf.NotAfter) {
			// Keep serving the old one while it is still valid.
			return r.cur, nil
		}
		return nil, fmt.Errorf("issue control plane client certificate: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse control plane client certificate: %w", err)
		}
	}
	r.cur = &c
	return r.cur, nil
}

func dueForRenewal(leaf *x509.Certificate, now time.Time) bool {
	if leaf == nil {
		return true
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotAfter.Sub(now) < life/3
}
