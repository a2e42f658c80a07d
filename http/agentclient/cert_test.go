package agentclient_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/security"
)

func TestRenewingCert(t *testing.T) {
	p := agenttest.NewPKI(t)
	start := time.Now()
	now := start
	issued := 0
	r := agentclient.NewRenewingCert(func(at time.Time) (tls.Certificate, error) {
		issued++
		return p.CA.IssueClientCert(security.ControlPlaneCN, at, 30*24*time.Hour)
	}, func() time.Time { return now })
	first, err := r.Get()
	if err != nil || issued != 1 || first.Leaf.Subject.CommonName != security.ControlPlaneCN {
		t.Fatalf("first: %v, issued %d", err, issued)
	}
	// NotBefore is backdated by the CA's clock-skew allowance, so the
	// validity is a little over 30 days; renewal comes before 20 days.
	now = start.Add(15 * 24 * time.Hour)
	if c, _ := r.Get(); c != first || issued != 1 {
		t.Fatalf("renewed too early (issued %d)", issued)
	}
	now = start.Add(21 * 24 * time.Hour)
	second, err := r.Get()
	if err != nil || second == first || issued != 2 {
		t.Fatalf("not renewed with less than a third left: %v, issued %d", err, issued)
	}
	if c, _ := r.Get(); c != second || issued != 2 {
		t.Fatal("renewed again at once")
	}
}
