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

func newUser(email, role string) *messages.User {
	now := time.Now().UTC()
	return &messages.User{ID: messages.NewID(), Email: email, DisplayName: "Test User", Role: role,
		PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", CreatedAt: now, UpdatedAt: now}
}

func TestUserLifecycle(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	u := newUser("Alice@Example.COM", "developer")
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), u)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Email != "alice@example.com" || got.Revision != u.Revision || got.PasswordHash != u.PasswordHash {
		t.Fatalf("stored user = %+v", got)
	}
	for _, spelling := range []string{"alice@example.com", "ALICE@EXAMPLE.COM", " Alice@example.com "} {
		byEmail, err := s.UserByEmail(ctx, spelling)
		if err != nil || byEmail.ID != u.ID {
			t.Errorf("UserByEmail(%q) = %v, %v", spelling, byEmail, err)
		}
	}
	if _, err := s.UserByEmail(ctx, "bob@example.com"); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("unknown email: %v, want not found", err)
	}
	if _, err := s.GetUser(ctx, messages.NewID()); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("unknown id: %v, want not found", err)
	}

	// Another spelling of a taken address is refused.
	domainError(t, s.Commit(ctx, store.CreateUser(store.NewTxn(), newUser("ALICE@example.com", "viewer"))), "user_email_conflict")
	// An invalid user is refused by the store itself, and nothing is written.
	bad := newUser("carol@example.com", "root")
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), bad)); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("invalid user: %v, want KindInvalid", err)
	}
	if keyExists(t, s, store.UniqKey(store.Users, "email", "carol@example.com")) {
		t.Error("an invalid user claimed its email")
	}

	// Update: role and email change; the old address is freed, the new taken.
	prev := *got
	next := *got
	next.Role, next.Email = "operator", "Alice.New@example.com"
	if err := s.Commit(ctx, store.UpdateUser(store.NewTxn(), &prev, &next)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByEmail(ctx, "alice@example.com"); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("old email still resolves: %v", err)
	}
	moved, err := s.UserByEmail(ctx, "alice.new@example.com")
	if err != nil || moved.Role != "operator" || moved.Revision != next.Revision {
		t.Fatalf("after update: %+v, %v", moved, err)
	}
	// A stale update is refused and leaves the guards alone.
	stale := prev
	stale.Email = "other@example.com"
	domainError(t, s.Commit(ctx, store.UpdateUser(store.NewTxn(), &prev, &stale)), "revision_conflict")
	if keyExists(t, s, store.UniqKey(store.Users, "email", "other@example.com")) {
		t.Error("a stale update claimed an email")
	}
	// Changing to another user's email conflicts.
	bob := newUser("bob@example.com", "viewer")
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), bob)); err != nil {
		t.Fatal(err)
	}
	steal := *moved
	steal.Email = "BOB@example.com"
	domainError(t, s.Commit(ctx, store.UpdateUser(store.NewTxn(), moved, &steal)), "user_email_conflict")

	users, next2, err := s.ListUsers(ctx, store.Page{})
	if err != nil || next2 != "" || len(users) != 2 || users[0].ID != u.ID || users[1].ID != bob.ID {
		t.Fatalf("ListUsers = %v, %q, %v", users, next2, err)
	}

	// Delete frees the email for a new account.
	if err := s.Commit(ctx, store.DeleteUser(store.NewTxn(), moved)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUser(ctx, u.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("deleted user still loads: %v", err)
	}
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), newUser("alice.new@example.com", "viewer"))); err != nil {
		t.Errorf("reusing a deleted user's email: %v", err)
	}
	if got := countKeys(t, s, store.IndexPrefix(store.Users, store.UserAllIndex)); got != 2 {
		t.Errorf("index keys = %d, want 2", got)
	}
}

func TestCreateUserEmailRace(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	const n = 20
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		u := newUser("Race@Example.com", "viewer")
		wg.Go(func() {
			<-start
			errs[i] = s.Commit(ctx, store.CreateUser(store.NewTxn(), u))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
			continue
		}
		if e := domainError(t, err, "user_email_conflict"); e.Kind != messages.KindConflict {
			t.Errorf("kind = %v, want KindConflict", e.Kind)
		}
	}
	if wins != 1 {
		t.Fatalf("%d creates won, want 1", wins)
	}
	if got := countKeys(t, s, store.RowPrefix(store.Users)); got != 1 {
		t.Errorf("user rows = %d, want 1", got)
	}
}

func TestBootstrapAdminOnce(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	const hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
	if _, err := s.BootstrapAdmin(ctx, "not an email", hash); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("invalid email: %v, want KindInvalid", err)
	}

	const n = 10
	start := make(chan struct{})
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			created[i], errs[i] = s.BootstrapAdmin(ctx, "Admin@Example.com", hash)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("bootstrap %d: %v", i, errs[i])
		}
		if created[i] {
			wins++
		}
	}
	if wins != 1 {
		t.Fatalf("%d bootstraps created an admin, want 1", wins)
	}
	admin, err := s.UserByEmail(ctx, "admin@example.com")
	if err != nil || admin.Role != "admin" || admin.PasswordHash != hash {
		t.Fatalf("admin = %+v, %v", admin, err)
	}

	// Once bootstrapped, never again: not with another email, and not after
	// the admin is deleted.
	if ok, err := s.BootstrapAdmin(ctx, "other@example.com", hash); ok || err != nil {
		t.Fatalf("second bootstrap = %v, %v", ok, err)
	}
	if err := s.Commit(ctx, store.DeleteUser(store.NewTxn(), admin)); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.BootstrapAdmin(ctx, "admin@example.com", hash); ok || err != nil {
		t.Fatalf("bootstrap after delete = %v, %v", ok, err)
	}
	if got := countKeys(t, s, store.RowPrefix(store.Users)); got != 0 {
		t.Errorf("user rows = %d, want 0", got)
	}
}

func TestBootstrapAdminSkipsWhenUsersExist(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	if err := s.Commit(ctx, store.CreateUser(store.NewTxn(), newUser("dev@example.com", "developer"))); err != nil {
		t.Fatal(err)
	}
	ok, err := s.BootstrapAdmin(ctx, "admin@example.com", "$argon2id$x")
	if ok || err != nil {
		t.Fatalf("bootstrap with a user present = %v, %v; want false, nil", ok, err)
	}
	if got := countKeys(t, s, store.RowPrefix(store.Users)); got != 1 {
		t.Errorf("user rows = %d, want 1", got)
	}
}

func TestKeyRingSharedAndRotated(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	clk := newClock()
	if _, _, err := s.RotateKeyRing(ctx, clk.Now()); !errors.Is(err, store.ErrNoKeyRing) {
		t.Fatalf("rotate before create: %v, want ErrNoKeyRing", err)
	}

	// Replicas booting together share one ring.
	const n = 8
	rings := make([]security.KeyRing, n)
	revs := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { rings[i], revs[i], errs[i] = s.LoadOrCreateKeyRing(ctx, clk.Now()) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if rings[i].Current.ID != rings[0].Current.ID || string(rings[i].Current.Secret) != string(rings[0].Current.Secret) || revs[i] != revs[0] {
			t.Fatalf("replica %d got ring %s@%d, replica 0 %s@%d", i, rings[i].Current.ID, revs[i], rings[0].Current.ID, revs[0])
		}
	}
	ring := rings[0]
	tok, _, err := ring.Issue("u1", security.RoleDeveloper, clk.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}

	clk.Add(5 * time.Minute)
	rotated, rev, err := s.RotateKeyRing(ctx, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rev <= revs[0] || rotated.Current.ID == ring.Current.ID || len(rotated.Previous) != 1 || rotated.Previous[0].ID != ring.Current.ID {
		t.Fatalf("rotated ring: current %s, previous %v, rev %d", rotated.Current.ID, rotated.Previous, rev)
	}
	// What another replica loads is the rotated ring, and it still verifies
	// the token the old key signed.
	loaded, lrev, err := s.LoadOrCreateKeyRing(ctx, clk.Now())
	if err != nil || lrev != rev || loaded.Current.ID != rotated.Current.ID {
		t.Fatalf("load after rotate: %s@%d, %v", loaded.Current.ID, lrev, err)
	}
	if c, err := loaded.Verify(tok, clk.Now()); err != nil || c.KeyID != ring.Current.ID {
		t.Fatalf("old token with the rotated ring: %v, %v", c, err)
	}
	newTok, _, err := loaded.Issue("u1", security.RoleDeveloper, clk.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.Verify(newTok, clk.Now()); err == nil {
		t.Error("the old ring verifies a token of a key it never had")
	}

	// Simultaneous rotations retire one key, not several: the losers adopt
	// the winner's ring.
	got := make([]security.KeyRing, n)
	for i := range n {
		wg.Go(func() { got[i], _, errs[i] = s.RotateKeyRing(ctx, clk.Now()) })
	}
	wg.Wait()
	final, _, err := s.KeyRing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	if final.Current.ID == loaded.Current.ID {
		t.Fatal("no rotation happened")
	}
	// Each winner retires the key the previous winner created, so the
	// stored chain is consistent whoever won: its previous keys include the
	// first ring's key, still within MaxAccessTTL.
	ids := map[string]bool{}
	for _, k := range final.Previous {
		ids[k.ID] = true
	}
	if !ids[loaded.Current.ID] || !ids[ring.Current.ID] {
		t.Errorf("final ring lost a key: previous %v", final.Previous)
	}
	if _, err := final.Verify(tok, clk.Now()); err != nil {
		t.Errorf("first token with the final ring: %v", err)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	tok0, family, hash0 := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", hash0, clk.Now(), 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	hashOf := func(tok string) string {
		t.Helper()
		_, secret, err := security.ParseRefreshToken(tok)
		if err != nil {
			t.Fatal(err)
		}
		return security.HashToken(secret)
	}

	// Happy path: each token rotates once into the next.
	tokens := []string{tok0}
	for i := range 3 {
		next, nextHash, err := security.RotateRefreshToken(family)
		if err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Minute)
		uid, err := s.RotateRefresh(ctx, family, hashOf(tokens[i]), nextHash, clk.Now(), 0)
		if err != nil || uid != "u1" {
			t.Fatalf("rotation %d = %q, %v", i, uid, err)
		}
		tokens = append(tokens, next)
	}
	f, err := s.GetRefreshFamily(ctx, family)
	if err != nil || f.Generation != 3 || len(f.PreviousHashes) != 3 || f.Revoked {
		t.Fatalf("family after 3 rotations: %+v, %v", f, err)
	}

	// A token the family never issued is refused without revoking it.
	if _, err := s.RotateRefresh(ctx, family, security.HashToken("guess"), "h", clk.Now(), 0); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Fatalf("unknown secret: %v, want ErrRefreshInvalid", err)
	}
	if f, _ := s.GetRefreshFamily(ctx, family); f.Revoked {
		t.Fatal("an unknown secret revoked the family")
	}

	// Replaying a rotated-out token is theft: the family is revoked in the
	// same write, and the current token fails from then on.
	_, nextHash, _ := security.RotateRefreshToken(family)
	uid, err := s.RotateRefresh(ctx, family, hashOf(tokens[1]), nextHash, clk.Now(), 0)
	if !errors.Is(err, store.ErrRefreshReuse) || uid != "u1" {
		t.Fatalf("reuse = %q, %v; want u1, ErrRefreshReuse", uid, err)
	}
	f, err = s.GetRefreshFamily(ctx, family)
	if err != nil || !f.Revoked || f.RevokedReason != messages.RevokedReuse || f.RevokedAt == nil {
		t.Fatalf("family after reuse: %+v, %v", f, err)
	}
	// Known tokens of the revoked family are replays, reported with the user
	// and changing nothing; an unknown secret stays merely invalid.
	for i, tok := range tokens {
		uid, err := s.RotateRefresh(ctx, family, hashOf(tok), nextHash, clk.Now(), 0)
		if !errors.Is(err, store.ErrRefreshRevokedReplay) || uid != "u1" {
			t.Fatalf("token %d after reuse = %q, %v; want u1, ErrRefreshRevokedReplay", i, uid, err)
		}
	}
	if _, err := s.RotateRefresh(ctx, family, security.HashToken("guess"), nextHash, clk.Now(), 0); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Fatalf("unknown secret of a revoked family: %v, want ErrRefreshInvalid", err)
	}
	if after, err := s.GetRefreshFamily(ctx, family); err != nil || after.Revision != f.Revision {
		t.Fatalf("a replay against a revoked family changed it: %+v, %v", after, err)
	}
	if _, err := s.RotateRefresh(ctx, "nosuchfamily", hashOf(tokens[3]), nextHash, clk.Now(), 0); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Fatalf("unknown family: %v, want ErrRefreshInvalid", err)
	}
}

func TestRefreshPreviousHashesBounded(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t)
	_, family, hash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", hash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	for range messages.MaxPreviousHashes + 4 {
		_, next, _ := security.RotateRefreshToken(family)
		if _, err := s.RotateRefresh(ctx, family, hash, next, clk.Now(), 0); err != nil {
			t.Fatal(err)
		}
		hash = next
	}
	f, err := s.GetRefreshFamily(ctx, family)
	if err != nil || len(f.PreviousHashes) != messages.MaxPreviousHashes || f.Generation != messages.MaxPreviousHashes+4 {
		t.Fatalf("family: %d previous hashes, generation %d, %v", len(f.PreviousHashes), f.Generation, err)
	}
}

// TestRefreshReuseDetectedAfterManyRotations: a token replayed dozens of
// rotations later is still recognised as reuse and revokes the family.
func TestRefreshReuseDetectedAfterManyRotations(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t)
	_, family, hash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", hash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	stolen := hash
	for range 40 {
		_, next, _ := security.RotateRefreshToken(family)
		if _, err := s.RotateRefresh(ctx, family, hash, next, clk.Now(), 0); err != nil {
			t.Fatal(err)
		}
		hash = next
	}
	_, next, _ := security.RotateRefreshToken(family)
	if uid, err := s.RotateRefresh(ctx, family, stolen, next, clk.Now(), 0); !errors.Is(err, store.ErrRefreshReuse) || uid != "u1" {
		t.Fatalf("replay after 40 rotations = %q, %v; want u1, ErrRefreshReuse", uid, err)
	}
}

func TestRefreshConcurrentRotation(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t)
	_, family, hash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, family, "u1", hash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	// Two requests race with the same token: one rotates, the other sees an
	// already-rotated token, which is reuse. Never two successes.
	const n = 2
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		_, next, _ := security.RotateRefreshToken(family)
		wg.Go(func() {
			<-start
			_, errs[i] = s.RotateRefresh(ctx, family, hash, next, clk.Now(), 0)
		})
	}
	close(start)
	wg.Wait()
	ok, reuse := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrRefreshReuse):
			reuse++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if ok != 1 || reuse != 1 {
		t.Fatalf("%d rotated, %d reuse; want 1 and 1", ok, reuse)
	}
}

func TestRefreshExpiryRevokeAndSweep(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	_, short, shortHash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, short, "u1", shortHash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, long, longHash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, long, "u1", longHash, clk.Now(), 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartSession(ctx, long, "u2", "h", clk.Now(), time.Hour); messages.KindOf(err) != messages.KindConflict {
		t.Fatalf("family id reused: %v, want a conflict", err)
	}

	clk.Add(time.Hour)
	if _, err := s.RotateRefresh(ctx, short, shortHash, "next", clk.Now(), 0); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Fatalf("expired family: %v, want ErrRefreshInvalid", err)
	}
	// Rotation does not extend a family: 47 more hours and it ends too.
	if _, err := s.RotateRefresh(ctx, long, longHash, "next", clk.Now(), 0); err != nil {
		t.Fatal(err)
	}
	n, err := s.SweepRefreshFamilies(ctx, clk.Now())
	if err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v; want 1", n, err)
	}
	if _, err := s.GetRefreshFamily(ctx, short); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Errorf("swept family: %v", err)
	}
	if got := countKeys(t, s, store.IndexPrefix(store.RefreshFamilies, store.RefreshUserIndex("u1"))); got != 1 {
		t.Errorf("index keys after sweep = %d, want 1", got)
	}

	// Logout revokes; a second logout is a no-op that keeps the reason.
	if err := s.RevokeFamily(ctx, long, messages.RevokedLogout); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeFamily(ctx, long, messages.RevokedUser); err != nil {
		t.Fatal(err)
	}
	f, err := s.GetRefreshFamily(ctx, long)
	if err != nil || !f.Revoked || f.RevokedReason != messages.RevokedLogout || !f.RevokedAt.Equal(clk.Now()) {
		t.Fatalf("after logout: %+v, %v", f, err)
	}
	// Its (known) current token is now a replay of a dead session.
	if _, err := s.RotateRefresh(ctx, long, "next", "again", clk.Now(), 0); !errors.Is(err, store.ErrRefreshRevokedReplay) {
		t.Fatalf("revoked family: %v, want ErrRefreshRevokedReplay", err)
	}
	if err := s.RevokeFamily(ctx, "nosuchfamily", messages.RevokedLogout); !errors.Is(err, store.ErrRefreshInvalid) {
		t.Fatalf("unknown family: %v", err)
	}
	clk.Add(47 * time.Hour)
	if n, err := s.SweepRefreshFamilies(ctx, clk.Now()); err != nil || n != 1 {
		t.Fatalf("second sweep = %d, %v; want 1", n, err)
	}
	if got := countKeys(t, s, store.Root+"index/"+store.RefreshFamilies+"/"); got != 0 {
		t.Errorf("index keys left = %d", got)
	}
}

func TestRevokeUserSessionsChunked(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	m := startMember(t, 16) // a tight op limit forces several chunks
	s := store.New(m.Client(), store.WithMaxTxnOps(m.MaxTxnOps()), store.WithClock(clk.Now))
	const n = 45
	for range n {
		_, family, hash := security.NewRefreshToken()
		if _, err := s.StartSession(ctx, family, "u1", hash, clk.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	_, other, otherHash := security.NewRefreshToken()
	if _, err := s.StartSession(ctx, other, "u2", otherHash, clk.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	// One family already logged out is left as it is.
	first, _, err := store.ListIndexed[messages.RefreshFamily](ctx, s, store.RefreshFamilies, store.RefreshUserIndex("u1"), store.Page{Limit: 1})
	if err != nil || len(first) != 1 {
		t.Fatal(first, err)
	}
	if err := s.RevokeFamily(ctx, first[0].ID, messages.RevokedLogout); err != nil {
		t.Fatal(err)
	}

	got, err := s.RevokeUserSessions(ctx, "u1", messages.RevokedUser)
	if err != nil || got != n-1 {
		t.Fatalf("RevokeUserSessions = %d, %v; want %d", got, err, n-1)
	}
	fams, _, err := store.ListIndexed[messages.RefreshFamily](ctx, s, store.RefreshFamilies, store.RefreshUserIndex("u1"), store.Page{Limit: store.MaxPageSize})
	if err != nil || len(fams) != n {
		t.Fatalf("families = %d, %v", len(fams), err)
	}
	for _, f := range fams {
		want := messages.RevokedUser
		if f.ID == first[0].ID {
			want = messages.RevokedLogout
		}
		if !f.Revoked || f.RevokedReason != want {
			t.Errorf("family %s: revoked %v reason %q, want %q", f.ID, f.Revoked, f.RevokedReason, want)
		}
	}
	if f, err := s.GetRefreshFamily(ctx, other); err != nil || f.Revoked {
		t.Errorf("another user's session was touched: %+v, %v", f, err)
	}
}

func newAPIToken(t *testing.T, owner string, now time.Time) (string, *messages.APIToken) {
	t.Helper()
	tok, id, hash := security.NewAPIToken()
	return tok, &messages.APIToken{ID: id, Name: "ci", Owner: owner, Role: "developer", Hash: hash, CreatedAt: now}
}

func TestAPITokenLifecycle(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	tok, k := newAPIToken(t, "u1", clk.Now())
	if err := s.Commit(ctx, store.CreateAPIToken(store.NewTxn(), k)); err != nil {
		t.Fatal(err)
	}
	_, k2 := newAPIToken(t, "u1", clk.Now())
	_, k3 := newAPIToken(t, "u2", clk.Now())
	if err := s.Commit(ctx, store.CreateAPIToken(store.CreateAPIToken(store.NewTxn(), k2), k3)); err != nil {
		t.Fatal(err)
	}
	bad := *k3
	bad.ID, bad.Hash = "zzzzzzzzzzzz", ""
	if err := s.Commit(ctx, store.CreateAPIToken(store.NewTxn(), &bad)); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("token without hash: %v, want KindInvalid", err)
	}

	// Authentication: parse, load by id, compare the secret with the hash.
	id, secret, err := security.ParseAPIToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAPIToken(ctx, id)
	if err != nil || got.Owner != "u1" || !security.TokenMatches(got.Hash, secret) {
		t.Fatalf("GetAPIToken = %+v, %v", got, err)
	}

	list, next, err := s.ListAPITokens(ctx, "u1", store.Page{})
	if err != nil || next != "" || len(list) != 2 {
		t.Fatalf("ListAPITokens(u1) = %d, %q, %v", len(list), next, err)
	}
	for _, l := range list {
		if l.Owner != "u1" {
			t.Errorf("u1's list has a token of %s", l.Owner)
		}
	}

	// Another owner's token is not found, not forbidden.
	if err := s.RevokeAPIToken(ctx, k3.ID, "u1"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("revoke someone else's token: %v, want not found", err)
	}
	if err := s.RevokeAPIToken(ctx, k.ID, "u1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAPIToken(ctx, k.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("revoked token still loads: %v", err)
	}
	if err := s.RevokeAPIToken(ctx, k.ID, "u1"); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("second revoke: %v, want not found", err)
	}
	if err := s.RevokeAPIToken(ctx, k3.ID, ""); err != nil {
		t.Errorf("admin revoke: %v", err)
	}

	// Deleting a user's tokens takes them all, index keys included.
	if n, err := s.DeleteOwnerTokens(ctx, "u1"); err != nil || n != 1 {
		t.Fatalf("DeleteOwnerTokens = %d, %v; want 1", n, err)
	}
	if got := countKeys(t, s, store.RowPrefix(store.APITokens)); got != 0 {
		t.Errorf("token rows left = %d", got)
	}
	if got := countKeys(t, s, store.Root+"index/"+store.APITokens+"/"); got != 0 {
		t.Errorf("token index keys left = %d", got)
	}
}

func TestTouchTokenAtMostOncePerMinute(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	_, k := newAPIToken(t, "u1", clk.Now())
	if err := s.Commit(ctx, store.CreateAPIToken(store.NewTxn(), k)); err != nil {
		t.Fatal(err)
	}
	rev0 := k.Revision
	touch := func(want bool) {
		t.Helper()
		wrote, err := s.TouchToken(ctx, k.ID, clk.Now())
		if err != nil || wrote != want {
			t.Fatalf("TouchToken at %v = %v, %v; want %v", clk.Now(), wrote, err, want)
		}
	}
	touch(true) // first use
	first := clk.Now()
	for range 5 {
		clk.Add(10 * time.Second)
		touch(false) // within the minute: read only
	}
	got, err := s.GetAPIToken(ctx, k.ID)
	if err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(first) {
		t.Fatalf("last used = %v, %v; want %v", got.LastUsedAt, err, first)
	}
	touched := got.Revision
	if touched == rev0 {
		t.Fatal("the first touch did not write")
	}
	clk.Add(10 * time.Second) // a full minute after the first write
	touch(true)
	touch(false)
	got, _ = s.GetAPIToken(ctx, k.ID)
	if !got.LastUsedAt.Equal(clk.Now()) || got.Revision == touched {
		t.Errorf("last used = %v at rev %d, want %v after rev %d", got.LastUsedAt, got.Revision, clk.Now(), touched)
	}
	if _, err := s.TouchToken(ctx, "nosuchtoken1", clk.Now()); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("unknown token: %v, want not found", err)
	}
}
