package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/otherix/otherix/internal/ratelimit"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Authenticate resolves a bearer token: an otx_ API token or a JWT access
// token. Both paths end in a cached user lookup, so a deleted or disabled
// user, a revoked token and a lowered role take effect within AuthCacheTTL on
// every replica (at once on the one that made the change). The role a request
// acts with is never above the user's current role, whatever the token says.
// Every failure is the same errUnauthenticated; the reason goes to the debug
// log.
func (s *Service) Authenticate(ctx context.Context, bearer string) (*messages.Principal, error) {
	p, reason, err := s.authenticate(ctx, bearer)
	if err != nil {
		return nil, err
	}
	if p == nil {
		s.log.Debug("authentication refused", "reason", reason)
		return nil, errUnauthenticated
	}
	return p, nil
}

// authenticate returns a principal, or nil with the reason for refusing, or
// an error when etcd cannot answer (which is not the caller's fault).
func (s *Service) authenticate(ctx context.Context, bearer string) (*messages.Principal, string, error) {
	if bearer == "" {
		return nil, "no token", nil
	}
	if strings.HasPrefix(bearer, security.APITokenPrefix) {
		return s.authenticateAPIToken(ctx, bearer)
	}
	claims, reason := s.verifyJWT(ctx, bearer)
	if claims == nil {
		return nil, reason, nil
	}
	u, reason, err := s.activeUser(ctx, claims.UserID)
	if u == nil {
		return nil, reason, err
	}
	return &messages.Principal{UserID: u.ID, Email: u.Email, Role: string(lowerRole(claims.Role, security.Role(u.Role)))}, "", nil
}

// verifyJWT checks an access token's signature and claims, or returns them
// from the verified-JWT cache. An entry lives until the token's own expiry at
// the latest, so an expired token is never answered from the cache; it only
// stands for the signature and claims check, never for the user lookup.
func (s *Service) verifyJWT(ctx context.Context, bearer string) (*security.AccessClaims, string) {
	key := sha256.Sum256([]byte(bearer))
	now := s.cfg.Now()
	if c, ok := s.jwts.get(key); ok && now.Before(c.ExpiresAt) {
		return c, ""
	}
	s.jwtVerifies.Add(1)
	claims, err := s.ring.Load().Verify(bearer, now)
	if err != nil && !errors.Is(err, security.ErrTokenExpired) && s.refreshRing(ctx) {
		// Perhaps signed by a key another replica created since our last
		// reread of the ring.
		claims, err = s.ring.Load().Verify(bearer, now)
	}
	if err != nil {
		return nil, err.Error()
	}
	s.jwts.putUntil(key, claims, claims.ExpiresAt)
	return claims, ""
}

func (s *Service) authenticateAPIToken(ctx context.Context, bearer string) (*messages.Principal, string, error) {
	tokID, secret, err := security.ParseAPIToken(bearer)
	if err != nil {
		return nil, err.Error(), nil
	}
	tok, ok := s.tokens.get(tokID)
	if !ok {
		if _, unknown := s.unknownTokens.get(tokID); unknown {
			return nil, "unknown api token (cached)", nil
		}
		s.tokenReads.Add(1)
		tok, err = s.st.GetAPIToken(ctx, tokID)
		switch {
		case messages.KindOf(err) == messages.KindNotFound:
			s.unknownTokens.put(tokID, struct{}{})
			return nil, "unknown api token", nil
		case err != nil:
			return nil, "", err
		}
		s.tokens.put(tokID, tok)
	}
	if !security.TokenMatches(tok.Hash, secret) {
		return nil, "api token secret mismatch", nil
	}
	if tok.Expired(s.cfg.Now()) {
		return nil, "api token expired", nil
	}
	u, reason, err := s.activeUser(ctx, tok.Owner)
	if u == nil {
		return nil, reason, err
	}
	s.touch(tokID)
	return &messages.Principal{UserID: u.ID, Email: u.Email, TokenID: tok.ID,
		Role: string(lowerRole(security.Role(tok.Role), security.Role(u.Role)))}, "", nil
}

// activeUser returns the user if it exists and is not disabled, from the
// cache when it can.
func (s *Service) activeUser(ctx context.Context, id string) (*messages.User, string, error) {
	u, ok := s.users.get(id)
	if !ok {
		var err error
		u, err = s.st.GetUser(ctx, id)
		switch {
		case messages.KindOf(err) == messages.KindNotFound:
			return nil, "user not found", nil
		case err != nil:
			return nil, "", err
		}
		s.users.put(id, u)
	}
	if u.Disabled {
		return nil, "user disabled", nil
	}
	return u, "", nil
}

// lowerRole is the lower of two roles, or "" (which no permission allows)
// when either is unknown.
func lowerRole(a, b security.Role) security.Role {
	if a.AtMost(b) {
		return a
	}
	if b.AtMost(a) {
		return b
	}
	return ""
}

// Login checks an email and password and starts a session. Unknown and
// disabled accounts cost the same argon2id work as a wrong password and get
// the same answer. Attempts are limited per source address and per (account,
// source address): never per account alone, so no one can lock an account
// from elsewhere and a correct password from the owner's address passes
// whatever other addresses do. Hashing waits for one of HashConcurrency
// slots, at most HashWait.
//
// Timing of the unknown-account path: store.UserByEmail makes the same two
// etcd reads for an unknown email as for a known one (the email guard, then a
// user row, for an unknown email a fixed id that never exists), and
// DummyVerify runs argon2id with security.DefaultParams, the parameters every
// new or rehashed password uses (a stored hash with older, weaker parameters
// is rehashed at its next successful login).
func (s *Service) Login(ctx context.Context, req messages.LoginRequest, source string) (*messages.TokenPair, error) {
	email := messages.NormalizeEmail(req.Email)
	if len(email) > messages.MaxEmailLength {
		email = email[:messages.MaxEmailLength]
	}
	now := s.cfg.Now()
	audit := messages.AuditEntry{Actor: email, Action: "auth.login", Source: source}
	refuse := func(result string, err error) (*messages.TokenPair, error) {
		audit.Result = result
		s.recordFailure(audit)
		return nil, err
	}
	if ok, wait := s.perSource.Take(source, now); !ok {
		return refuse("rate_limited", rateLimited(wait))
	}
	if ok, wait := s.perAccount.Take(email+"\x00"+ratelimit.SourceKey(source), now); !ok {
		return refuse("rate_limited", rateLimited(wait))
	}
	u, err := s.st.UserByEmail(ctx, email)
	if err != nil && messages.KindOf(err) != messages.KindNotFound {
		return nil, err
	}
	if u == nil {
		if err := s.hashing(ctx, func() { security.DummyVerify(req.Password) }); err != nil {
			return refuse("rate_limited", err)
		}
		s.log.Debug("login refused", "reason", "unknown account")
		return refuse("failed", errInvalidCredentials)
	}
	audit.Actor = u.ID
	var ok, rehash bool
	if err := s.hashing(ctx, func() { ok, rehash, err = security.VerifyPassword(u.PasswordHash, req.Password) }); err != nil {
		return refuse("rate_limited", err)
	}
	if err != nil {
		s.log.Error("stored password hash does not decode", "user", u.ID, "err", err)
	}
	if !ok || u.Disabled {
		s.log.Debug("login refused", "user", u.ID, "disabled", u.Disabled)
		return refuse("failed", errInvalidCredentials)
	}
	pair, err := s.startSession(ctx, u)
	if err != nil {
		return nil, err
	}
	if rehash {
		s.rehash(ctx, u, req.Password)
	}
	audit.Result = "ok"
	s.record(audit)
	return pair, nil
}

// hashing runs fn, a password hash or verification, in one of the
// HashConcurrency slots. It waits for a slot at most HashWait (and while ctx
// lives); past that the caller is answered rate_limited at once, so a flood
// costs waiting goroutines, not argon2id's memory per request.
func (s *Service) hashing(ctx context.Context, fn func()) error {
	select {
	case s.hashSlots <- struct{}{}:
	default:
		// All busy: wait, but not past HashWait. (Trying first means a free
		// slot is always taken, never lost to a timer that fired already.)
		t := time.NewTimer(s.cfg.HashWait)
		defer t.Stop()
		select {
		case s.hashSlots <- struct{}{}:
		case <-t.C:
			return rateLimited(time.Second)
		case <-ctx.Done():
			return rateLimited(time.Second)
		}
	}
	defer func() { <-s.hashSlots }()
	n := s.hashesInFlight.Add(1)
	for peak := s.hashesPeak.Load(); n > peak && !s.hashesPeak.CompareAndSwap(peak, n); peak = s.hashesPeak.Load() {
	}
	defer s.hashesInFlight.Add(-1)
	fn()
	return nil
}

// AllowAnonymous takes one request of source's budget for unauthenticated
// paths (AnonymousPerMinute), or answers rate_limited with the wait.
func (s *Service) AllowAnonymous(source string) error {
	if ok, wait := s.anonymous.Take(source, s.cfg.Now()); !ok {
		return rateLimited(wait)
	}
	return nil
}

// startSession issues an access token and the first refresh token of a new
// family.
func (s *Service) startSession(ctx context.Context, u *messages.User) (*messages.TokenPair, error) {
	refresh, family, hash := security.NewRefreshToken()
	now := s.cfg.Now()
	if _, err := s.st.StartSession(ctx, family, u.ID, hash, now, s.cfg.SessionTTL); err != nil {
		return nil, err
	}
	return s.tokenPair(u, refresh)
}

func (s *Service) tokenPair(u *messages.User, refresh string) (*messages.TokenPair, error) {
	access, _, err := s.ring.Load().Issue(u.ID, security.Role(u.Role), s.cfg.Now(), s.cfg.AccessTTL)
	if err != nil {
		return nil, err
	}
	return &messages.TokenPair{AccessToken: access, RefreshToken: refresh,
		ExpiresIn: int(s.cfg.AccessTTL.Seconds()), TokenType: "Bearer"}, nil
}

// rehash stores a hash with the current parameters while the plaintext is at
// hand. It is best effort: a conflict means the row changed, and the next
// login tries again.
func (s *Service) rehash(ctx context.Context, u *messages.User, pw string) {
	var h string
	var err error
	if werr := s.hashing(ctx, func() { h, err = security.HashPassword(pw, security.DefaultParams()) }); werr != nil {
		return // busy: the next login rehashes
	}
	if err != nil {
		s.log.Warn("rehash password", "user", u.ID, "err", err)
		return
	}
	next := *u
	next.PasswordHash, next.UpdatedAt = h, s.cfg.Now().UTC()
	if err := s.st.Commit(ctx, store.UpdateUser(store.NewTxn(), u, &next)); err != nil {
		s.log.Info("rehash password", "user", u.ID, "err", err)
		return
	}
	s.users.drop(u.ID)
}

// Refresh rotates a refresh token and issues a new access token with the
// user's current role. A token rotated out less than RefreshGrace ago (two
// clients of one session refreshing at once) gets a new pair of the same
// session. A token rotated out longer ago revokes its whole family (likely
// theft): the legitimate holder's newer token stops working too, and both
// parties must log in again.
func (s *Service) Refresh(ctx context.Context, refreshToken, source string) (*messages.TokenPair, error) {
	family, secret, err := security.ParseRefreshToken(refreshToken)
	if err != nil {
		s.log.Debug("refresh refused", "reason", err)
		return nil, errUnauthenticated
	}
	next, nextHash, err := security.RotateRefreshToken(family)
	if err != nil {
		return nil, errUnauthenticated
	}
	userID, err := s.st.RotateRefresh(ctx, family, security.HashToken(secret), nextHash, s.cfg.Now(), max(s.cfg.RefreshGrace, 0))
	switch {
	case errors.Is(err, store.ErrRefreshReuse):
		s.log.Warn("refresh token reuse: session family revoked (possible theft)",
			"user", userID, "family", family, "source", source)
		s.recordFailure(messages.AuditEntry{Actor: userID, Action: "auth.refresh_reuse", Target: family,
			Result: "denied", Source: source})
		return nil, errUnauthenticated
	case errors.Is(err, store.ErrRefreshRevokedReplay):
		s.log.Warn("refresh token of a revoked session replayed (possible theft)",
			"user", userID, "family", family, "source", source)
		s.recordFailure(messages.AuditEntry{Actor: userID, Action: "auth.refresh_reuse", Target: family,
			Result: "denied", Source: source})
		return nil, errUnauthenticated
	case errors.Is(err, store.ErrRefreshInvalid):
		s.log.Debug("refresh refused", "reason", err)
		return nil, errUnauthenticated
	case err != nil:
		return nil, err
	}
	u, err := s.st.GetUser(ctx, userID)
	if err != nil && messages.KindOf(err) != messages.KindNotFound {
		return nil, err
	}
	if u == nil || u.Disabled {
		_ = s.st.RevokeFamily(ctx, family, messages.RevokedUser)
		return nil, errUnauthenticated
	}
	s.users.put(u.ID, u)
	return s.tokenPair(u, next)
}

// Logout revokes the session a refresh token belongs to. A malformed token
// is unauthenticated; a well-formed one of an unknown or expired family, or
// whose secret the family does not know, succeeds without revoking anything
// (the family id alone must not let anyone end someone else's session). A
// rotated-out token is a copy someone kept: it revokes the family as reuse
// and is logged and audited as such (the answer is the same success).
func (s *Service) Logout(ctx context.Context, refreshToken string) error {
	family, secret, err := security.ParseRefreshToken(refreshToken)
	if err != nil {
		return errUnauthenticated
	}
	f, err := s.st.GetRefreshFamily(ctx, family)
	if errors.Is(err, store.ErrRefreshInvalid) {
		return nil
	}
	if err != nil {
		return err
	}
	current := security.TokenMatches(f.CurrentHash, secret)
	previous := false
	for _, h := range f.PreviousHashes {
		previous = security.TokenMatches(h, secret) || previous
	}
	if !current && !previous {
		return nil
	}
	reason := messages.RevokedLogout
	if !current {
		reason = messages.RevokedReuse
	}
	err = s.st.RevokeFamily(ctx, family, reason)
	if err != nil && !errors.Is(err, store.ErrRefreshInvalid) {
		return err
	}
	if !current {
		s.log.Warn("logout with a rotated-out refresh token: session family revoked (possible theft)",
			"user", f.UserID, "family", family)
		s.recordFailure(messages.AuditEntry{Actor: f.UserID, Action: "auth.refresh_reuse", Target: family, Result: "denied"})
		return nil
	}
	s.record(messages.AuditEntry{Actor: f.UserID, Action: "auth.logout", Target: family, Result: "ok"})
	return nil
}
