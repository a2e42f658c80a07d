//go:build etcd

package identity_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// TestJWTVerificationCached: a repeated access token skips the signature
// check, yet a deleted user's cached token stops at once (the user lookup
// still runs), and a token past its expiry is never answered from the cache
// even when AuthCacheTTL is longer than its life.
func TestJWTVerificationCached(t *testing.T) {
	clk := testutil.NewClock(time.Now())
	svc, _ := startIdentity(t, identity.Config{AuthCacheTTL: time.Hour, Now: clk.Now})
	ctx := t.Context()
	dev, err := svc.CreateUser(ctx, messages.CreateUserRequest{Email: "dev@example.com", Role: "developer", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	devPair := login(t, svc, "dev@example.com", devPass)
	before := svc.JWTVerifiesForTest()
	for range 10 {
		if _, err := svc.Authenticate(ctx, devPair.AccessToken); err != nil {
			t.Fatal(err)
		}
	}
	if n := svc.JWTVerifiesForTest() - before; n != 1 {
		t.Fatalf("10 requests with one token verified it %d times, want 1", n)
	}

	// Deleted within the cache TTL: the cached token goes through the user
	// lookup and is refused.
	if err := svc.DeleteUser(ctx, dev.ID); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Authenticate(ctx, devPair.AccessToken)
	wantUnauthenticated(t, err)

	// Expiry bounds the cache entry: past exp (and the verifier's leeway)
	// the token fails although AuthCacheTTL (1h) has not run out.
	admin := login(t, svc, adminEmail, adminPass)
	if _, err := svc.Authenticate(ctx, admin.AccessToken); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Duration(admin.ExpiresIn)*time.Second + security.Leeway + time.Second)
	_, err = svc.Authenticate(ctx, admin.AccessToken)
	wantUnauthenticated(t, err)
	// Just past exp but inside the leeway: verified again, not cached.
	admin = login(t, svc, adminEmail, adminPass)
	clk.Add(time.Duration(admin.ExpiresIn)*time.Second + time.Second)
	before = svc.JWTVerifiesForTest()
	for range 3 {
		if _, err := svc.Authenticate(ctx, admin.AccessToken); err != nil {
			t.Fatalf("inside leeway: %v", err)
		}
	}
	if n := svc.JWTVerifiesForTest() - before; n != 3 {
		t.Fatalf("an expired token was answered from the cache: %d verifications for 3 requests", n)
	}
}

// TestForgedAPITokensCostOneRead: a burst of requests with one unknown otx_
// token reads etcd once per AuthCacheTTL, not once per request.
func TestForgedAPITokensCostOneRead(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{})
	ctx := t.Context()
	forged, _, _ := security.NewAPIToken()
	before := svc.APITokenReadsForTest()
	for range 50 {
		_, err := svc.Authenticate(ctx, forged)
		wantUnauthenticated(t, err)
	}
	if n := svc.APITokenReadsForTest() - before; n != 1 {
		t.Fatalf("50 requests with one forged token read etcd %d times, want 1", n)
	}
	// A real token is unaffected.
	p := messages.Principal{UserID: "u", Role: "admin"}
	users, _, err := svc.ListUsers(ctx, store.Page{})
	if err != nil || len(users) == 0 {
		t.Fatal(users, err)
	}
	p.UserID = users[0].ID
	tok, err := svc.CreateAPIToken(ctx, p, messages.CreateAPITokenRequest{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, tok.Token); err != nil {
		t.Fatal(err)
	}
}

// auditHas waits for an audit entry with the action, target and result.
func auditHas(t *testing.T, svc *identity.Service, action, target, result string) bool {
	t.Helper()
	return testutil.Until(5*time.Second, 5*time.Millisecond, func() bool {
		entries, _, err := svc.ListAudit(t.Context(), store.Page{Limit: store.MaxPageSize})
		if err != nil {
			return false
		}
		for _, e := range entries {
			if e.Action == action && e.Target == target && e.Result == result {
				return true
			}
		}
		return false
	})
}

func familyOf(t *testing.T, tok string) string {
	t.Helper()
	family, _, err := security.ParseRefreshToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return family
}

// TestRefreshReplayOfRevokedFamilyAudited: a token of a session that was
// already ended is refused and logged and audited as reuse.
func TestRefreshReplayOfRevokedFamilyAudited(t *testing.T) {
	svc, _ := startIdentity(t, identity.Config{AuditFlush: 20 * time.Millisecond})
	ctx := t.Context()
	pair := login(t, svc, adminEmail, adminPass)
	if err := svc.Logout(ctx, pair.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Refresh(ctx, pair.RefreshToken, "198.51.100.7")
	wantUnauthenticated(t, err)
	if !auditHas(t, svc, "auth.refresh_reuse", familyOf(t, pair.RefreshToken), "denied") {
		t.Fatal("no auth.refresh_reuse audit entry for a replay against a revoked family")
	}
}

// TestLogoutWithRotatedOutTokenIsReuse: logging out with a token that was
// already rotated out revokes the family as reuse and audits it so.
func TestLogoutWithRotatedOutTokenIsReuse(t *testing.T) {
	svc, st := startIdentity(t, identity.Config{AuditFlush: 20 * time.Millisecond})
	ctx := t.Context()
	first := login(t, svc, adminEmail, adminPass)
	second, err := svc.Refresh(ctx, first.RefreshToken, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Logout(ctx, first.RefreshToken); err != nil {
		t.Fatal(err)
	}
	family := familyOf(t, first.RefreshToken)
	f, err := st.GetRefreshFamily(ctx, family)
	if err != nil || !f.Revoked || f.RevokedReason != messages.RevokedReuse {
		t.Fatalf("family after logout with a rotated-out token: %+v, %v", f, err)
	}
	_, err = svc.Refresh(ctx, second.RefreshToken, "192.0.2.1")
	wantUnauthenticated(t, err)
	if !auditHas(t, svc, "auth.refresh_reuse", family, "denied") {
		t.Fatal("no auth.refresh_reuse audit entry for logout with a rotated-out token")
	}
}
