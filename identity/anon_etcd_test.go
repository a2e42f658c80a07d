//go:build etcd

package identity_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func allAudit(t *testing.T, svc *identity.Service) []messages.AuditEntry {
	t.Helper()
	var out []messages.AuditEntry
	page := store.Page{Limit: store.MaxPageSize}
	for {
		es, next, err := svc.ListAudit(t.Context(), page)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, es...)
		if next == "" {
			return out
		}
		page.Cursor = next
	}
}

// TestFailureWindowsBounded: failures from more addresses than LimiterSize
// neither grow memory past it nor write more than one more set of entries.
func TestFailureWindowsBounded(t *testing.T) {
	clk := testutil.NewClock(time.Now())
	svc, _ := startIdentity(t, identity.Config{AuditFlush: 10 * time.Millisecond, Now: clk.Now, LimiterSize: 20})
	for i := range 500 {
		svc.Audit(messages.AuditEntry{Action: "GET /v1/vms", Result: "unauthenticated",
			Source: fmt.Sprintf("2001:db8:%x::1", i)})
	}
	if w := svc.FailureWindows(); w > 21 {
		t.Fatalf("%d failure windows open, want at most 21 (20 addresses and the overflow)", w)
	}
	clk.Add(2 * time.Minute)
	var entries []messages.AuditEntry
	counted := func() int {
		c := 0
		for _, e := range entries {
			if e.Action == "GET /v1/vms" {
				c += max(e.Count, 1)
			}
		}
		return c
	}
	if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool { entries = allAudit(t, svc); return counted() == 500 }) {
		t.Fatalf("entries account for %d of 500 requests", counted())
	}
	if len(entries) > 2*21+1 {
		t.Fatalf("%d entries for 500 addresses over a 20-address bound", len(entries))
	}
}

// TestLoginLockoutByOthers: wrong passwords from an attacker's address
// lock nothing for the owner's address, the admin's included.
func TestLoginLockoutByOthers(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{})
	ctx := t.Context()
	for i := range 30 {
		_, err := svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: "wrong-password-123"}, "192.0.2.66")
		if i >= 5 {
			wantCode(t, err, "rate_limited")
		}
	}
	// IPv6 attacker across one /64 is one address.
	for i := range 10 {
		_, _ = svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: "wrong-password-123"}, fmt.Sprintf("2001:db8::%x", i))
	}
	pair, err := svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: adminPass}, "198.51.100.1")
	if err != nil {
		t.Fatalf("the owner's correct password from its own address: %v", err)
	}
	if _, err := svc.Authenticate(ctx, pair.AccessToken); err != nil {
		t.Fatal(err)
	}
	// The attacker's own address stays limited for that account, even with
	// the right password.
	_, err = svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: adminPass}, "192.0.2.66")
	e := wantCode(t, err, "rate_limited")
	if ra, _ := e.Details["retry_after"].(int64); ra < 1 {
		t.Fatalf("rate_limited without a retry_after: %+v", e.Details)
	}
}

// TestHashConcurrencyBounded: a burst of logins from many addresses never
// hashes more passwords at once than HashConcurrency.
func TestHashConcurrencyBounded(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{HashConcurrency: 2, HashWait: time.Minute})
	ctx := t.Context()
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			pw := "wrong-password-123"
			if i%3 == 0 {
				pw = adminPass
			}
			_, errs[i] = svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: pw}, fmt.Sprintf("192.0.2.%d", 10+i))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if i%3 == 0 && err != nil {
			t.Fatalf("login %d with the right password: %v", i, err)
		}
		if i%3 != 0 {
			wantCode(t, err, "invalid_credentials")
		}
	}
	if peak := svc.HashesPeakForTest(); peak < 1 || peak > 2 {
		t.Fatalf("%d hashes ran at once, want 1..2", peak)
	}
}

// TestHashWaitAnswersRateLimited: a login that cannot get a hashing slot
// within HashWait is answered rate_limited instead of queueing forever.
func TestHashWaitAnswersRateLimited(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{HashConcurrency: 1, HashWait: time.Nanosecond})
	ctx := t.Context()
	const n = 8
	var wg sync.WaitGroup
	var limited, refused atomic.Int64
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := svc.Login(ctx, messages.LoginRequest{Email: adminEmail, Password: "wrong-password-123"}, fmt.Sprintf("192.0.2.%d", 100+i))
			switch messages.KindOf(err) {
			case messages.KindTooManyRequests:
				limited.Add(1)
			case messages.KindUnauthenticated:
				refused.Add(1)
			default:
				t.Errorf("login: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	// The first to come takes the slot (its wrong password is refused);
	// the others find it busy and are answered at once.
	if limited.Load()+refused.Load() != n || refused.Load() < 1 || limited.Load() < 1 {
		t.Fatalf("%d limited, %d refused of %d", limited.Load(), refused.Load(), n)
	}
	if svc.HashesPeakForTest() != 1 {
		t.Fatalf("peak %d hashes with one slot", svc.HashesPeakForTest())
	}
}

// TestRefreshGraceKeepsSession: two clients of one session refresh with
// the same token; both get a pair and the session stays usable. After the
// grace, the rotated-out token is reuse and revokes the family.
func TestRefreshGraceKeepsSession(t *testing.T) {
	clk := testutil.NewClock(time.Now())
	svc, _ := startIdentity(t, identity.Config{Now: clk.Now})
	ctx := t.Context()
	pair := login(t, svc, adminEmail, adminPass)
	a, err := svc.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(5 * time.Second)
	b, err := svc.Refresh(ctx, pair.RefreshToken, "192.0.2.1")
	if err != nil {
		t.Fatalf("second client within the grace: %v", err)
	}
	for _, p := range []*messages.TokenPair{a, b} {
		if _, err := svc.Authenticate(ctx, p.AccessToken); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.Refresh(ctx, b.RefreshToken, "192.0.2.1"); err != nil {
		t.Fatalf("session after the race: %v", err)
	}
	clk.Add(time.Minute)
	_, err = svc.Refresh(ctx, a.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	// Reuse past the grace revoked the whole family.
	_, err = svc.Refresh(ctx, b.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
}
