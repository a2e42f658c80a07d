//go:build etcd

package store_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// TestRefreshGraceRace: two clients of one session refresh with the same
// token at once. With a grace window both succeed and the session lives on;
// the tokens both got keep working.
func TestRefreshGraceRace(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t)
	_, family, hash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", hash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	const n = 2
	errs := make([]error, n)
	nexts := make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		_, nexts[i], _ = security.RotateRefreshToken(family)
		wg.Go(func() {
			<-start
			_, errs[i] = s.RotateRefresh(ctx, family, hash, nexts[i], clk.Now(), 30*time.Second)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v; want both to succeed within the grace", i, err)
		}
	}
	f, err := s.GetRefreshFamily(ctx, family)
	if err != nil || f.Revoked || f.Generation != 2 {
		t.Fatalf("family after the race: %+v, %v", f, err)
	}
	// Both clients go on refreshing with what they got (one holds the
	// current hash, the other one in grace).
	for i := range n {
		_, next, _ := security.RotateRefreshToken(family)
		if _, err := s.RotateRefresh(ctx, family, nexts[i], next, clk.Now(), 30*time.Second); err != nil {
			t.Fatalf("client %d refreshing again: %v", i, err)
		}
	}
}

// TestRefreshGraceEnds: a rotated-out token is accepted only within the grace
// and only for its own family; after it, presenting it is reuse and revokes
// the family as before.
func TestRefreshGraceEnds(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t)
	const grace = 30 * time.Second
	_, family, h0 := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", h0, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, otherFamily, otherHash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, otherFamily, "u2", otherHash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, h1, _ := security.RotateRefreshToken(family)
	if _, err := s.RotateRefresh(ctx, family, h0, h1, clk.Now(), grace); err != nil {
		t.Fatal(err)
	}
	// Bound to the family: another session's id with this hash is unknown.
	if _, err := s.RotateRefresh(ctx, otherFamily, h0, "x", clk.Now(), grace); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Fatalf("grace hash on another family: %v, want ErrRefreshInvalid", err)
	}
	clk.Add(grace - time.Second)
	_, h2, _ := security.RotateRefreshToken(family)
	if _, err := s.RotateRefresh(ctx, family, h0, h2, clk.Now(), grace); err != nil {
		t.Fatalf("previous token within the grace: %v", err)
	}
	// h0's grace started at the first rotation and ends now; h1 was rotated
	// out by the grace use and has its own.
	clk.Add(2 * time.Second)
	_, h3, _ := security.RotateRefreshToken(family)
	if _, err := s.RotateRefresh(ctx, family, h1, h3, clk.Now(), grace); err != nil {
		t.Fatalf("token rotated out by the grace use, within its own grace: %v", err)
	}
	_, h4, _ := security.RotateRefreshToken(family)
	uid, err := s.RotateRefresh(ctx, family, h0, h4, clk.Now(), grace)
	if !errors.Is(err, store.ErrRefreshReuse) || uid != "u1" {
		t.Fatalf("previous token after the grace = %q, %v; want reuse", uid, err)
	}
	f, err := s.GetRefreshFamily(ctx, family)
	if err != nil || !f.Revoked || f.RevokedReason != messages.RevokedReuse || len(f.Grace) != 0 {
		t.Fatalf("family after reuse past the grace: %+v, %v", f, err)
	}
	// Revoked: a hash that was in grace is a replay now.
	if _, err := s.RotateRefresh(ctx, family, h3, "y", clk.Now(), grace); !errors.Is(err, store.ErrRefreshRevokedReplay) {
		t.Fatalf("grace hash after revocation: %v, want ErrRefreshRevokedReplay", err)
	}
}

// TestRefreshGraceBounded: a burst of grace uses cannot grow the row.
func TestRefreshGraceBounded(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t)
	_, family, h0 := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", h0, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, cur, _ := security.RotateRefreshToken(family)
	if _, err := s.RotateRefresh(ctx, family, h0, cur, clk.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := range 3 * messages.MaxGraceHashes {
		_, next, _ := security.RotateRefreshToken(family)
		if _, err := s.RotateRefresh(ctx, family, cur, next, clk.Now(), time.Minute); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		cur = next
	}
	f, err := s.GetRefreshFamily(ctx, family)
	if err != nil || len(f.Grace) != messages.MaxGraceHashes {
		t.Fatalf("grace list holds %d, want %d (%v)", len(f.Grace), messages.MaxGraceHashes, err)
	}
}
