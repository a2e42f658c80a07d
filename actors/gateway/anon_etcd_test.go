//go:build etcd

package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestAnonymousFloodAuditBounded reproduces the audit log as a write
// amplifier: thousands of failed logins (each naming another email) and
// enrollments with made-up join tokens from one address. The number of audit
// entries they write is bounded per address and window, whatever the rate,
// and none is lost: the counts add up to the attempts.
func TestAnonymousFloodAuditBounded(t *testing.T) {
	clk := testutil.NewClock(time.Now())
	g, _ := startIdentity(t, identity.Config{AuditFlush: 10 * time.Millisecond, Now: clk.Now})
	ctx := t.Context()
	const n = 1500
	const source = "203.0.113.50"
	for i := range n {
		_, err := g.Login(ctx, messages.LoginRequest{Email: fmt.Sprintf("victim%d@example.com", i), Password: "wrong-password-123"}, source)
		if k := messages.KindOf(err); k != messages.KindUnauthenticated && k != messages.KindTooManyRequests {
			t.Fatalf("login %d: %v", i, err)
		}
		tok, _, _, err := security.NewJoinToken(g.CA().Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Enroll(ctx, messages.EnrollRequest{Token: tok, Name: fmt.Sprintf("n%d", i)}, source); messages.KindOf(err) == messages.KindInternal {
			t.Fatalf("enroll %d: %v", i, err)
		}
	}
	// The window ends: its counts go out at the next flush.
	clk.Add(2 * time.Minute)
	var entries []messages.AuditEntry
	total := func() (logins, enrolls int) {
		for _, e := range entries {
			c := max(e.Count, 1)
			switch e.Action {
			case "auth.login":
				if e.Result != "ok" {
					logins += c
				}
			case "node.enroll":
				enrolls += c
			}
		}
		return
	}
	if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool {
		entries = allAudit(t, g)
		l, e := total()
		return l == n && e == n
	}) {
		l, e := total()
		t.Fatalf("%d audit entries account for %d failed logins and %d enrollments; want %d each", len(entries), l, e, n)
	}
	flood := 0
	for _, e := range entries {
		if e.Action == "auth.login" && e.Result != "ok" || e.Action == "node.enroll" {
			flood++
			if e.Source != source {
				t.Errorf("entry %+v: source is not the client's address", e)
			}
		}
	}
	t.Logf("%d attempts from one address wrote %d audit entries", 2*n, flood)
	// Two (action, result) keys for logins (failed, rate_limited), one for
	// enrollments: at most a first entry and a count entry each.
	if flood > 6 {
		t.Fatalf("%d attempts from one address wrote %d audit entries; want at most 6", 2*n, flood)
	}
	if w := g.FailureWindowsForTest(); w != 0 {
		t.Fatalf("%d failure windows still open after the window ended", w)
	}
}
