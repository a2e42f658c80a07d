// Package identity is who may call the control plane: users and their
// passwords, login sessions (access tokens and refresh-token families), API
// tokens, the audit log, the authentication cache and the rate limits of
// unauthenticated paths. It holds no actor: Service is plain methods over the
// store, safe for concurrent use, with two goroutines of its own (the audit
// writer and the token-use toucher) that Close stops and awaits.
package identity

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/internal/ratelimit"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Config tunes authentication, sessions and the audit log. The zero
// value is the production configuration.
type Config struct {
	// AuthCacheTTL is how long a verified API token, a verified JWT (never
	// past its expiry), an unknown API token id and a looked-up user are
	// reused without reading etcd or checking a signature (default 5s). It
	// is also the longest a revoked token, a deleted or disabled user or a
	// demoted role keeps working on another replica; on the replica that
	// made the change the cache entry is dropped at once. Negative disables
	// the cache.
	AuthCacheTTL time.Duration
	// AuthCacheSize bounds each of the token, JWT, unknown-token and user
	// caches (default 10000).
	AuthCacheSize int
	// AccessTTL is an access token's lifetime (default 15m, at most 1h).
	AccessTTL time.Duration
	// SessionTTL is a refresh family's absolute lifetime (default 30 days).
	SessionTTL time.Duration
	// KeyRotation is the age at which the JWT signing key is replaced
	// (default 24h); KeyRefresh is how often each replica rereads the ring
	// from etcd and checks that age (default 1m).
	KeyRotation time.Duration
	KeyRefresh  time.Duration
	// LoginPerSource and LoginPerAccount are the login attempts allowed per
	// minute, with the same burst, per client address (default 10) and per
	// account email from one client address (default 5). There is no limit
	// per account alone: one would let anyone lock anyone out, the admin
	// included, and a correct password from the owner's address must pass
	// whatever other addresses do. LimiterSize bounds each limiter's map,
	// and so the number of client addresses tracked (default 10000 keys).
	LoginPerSource  int
	LoginPerAccount int
	LimiterSize     int
	// AnonymousPerMinute is the requests per minute (and the burst) one
	// client address may make to unauthenticated paths: login, refresh,
	// logout, the console WebSocket, /v1/ca, and enroll and renew on the
	// agent listener (default 240). Over it the answer is 429 rate_limited
	// with Retry-After.
	AnonymousPerMinute int
	// HashConcurrency bounds the password hashes (argon2id, 64 MiB each)
	// computed at once (default GOMAXPROCS); HashWait is how long a login
	// waits for a slot before it is answered 429 rate_limited (default 2s).
	// A login flood from many addresses then costs at most
	// HashConcurrency × 64 MiB, not one hash per request in flight.
	HashConcurrency int
	HashWait        time.Duration
	// RefreshGrace is how long a refresh token just rotated out may still
	// be presented (by a second client of the same session that raced the
	// first) and get a new pair of the same session instead of revoking it
	// as stolen (default 30s; negative disables the grace).
	RefreshGrace time.Duration
	// AuditRetention is how long audit entries are kept (default 30 days).
	AuditRetention time.Duration
	// AuditFlush is how often buffered audit entries are written (default
	// 200ms); AuditBuffer bounds the buffer (default 10000 entries), beyond
	// which the oldest are dropped and counted.
	AuditFlush  time.Duration
	AuditBuffer int
	// AuditWindow is the window over which failures without credentials
	// from one client address are folded into one audit entry with a count
	// (default 1m); see failureFolder.
	AuditWindow time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// SetDefaults fills every zero field with its production default. New
// applies it to its own copy; a caller that reads the configuration (its
// clock, the key refresh interval) applies it first.
func (c *Config) SetDefaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.AuthCacheTTL, 5*time.Second)
	set(&c.AccessTTL, security.DefaultAccessTTL)
	set(&c.SessionTTL, 30*24*time.Hour)
	set(&c.KeyRotation, 24*time.Hour)
	set(&c.KeyRefresh, time.Minute)
	set(&c.AuditRetention, 30*24*time.Hour)
	set(&c.AuditFlush, 200*time.Millisecond)
	set(&c.AuditWindow, time.Minute)
	set(&c.HashWait, 2*time.Second)
	// A negative RefreshGrace stays negative (Refresh reads it as none), so
	// that applying the defaults twice keeps it disabled.
	set(&c.RefreshGrace, 30*time.Second)
	seti := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	seti(&c.AuthCacheSize, 10000)
	seti(&c.LoginPerSource, 10)
	seti(&c.LoginPerAccount, 5)
	seti(&c.LimiterSize, 10000)
	seti(&c.AuditBuffer, 10000)
	seti(&c.AnonymousPerMinute, 240)
	seti(&c.HashConcurrency, runtime.GOMAXPROCS(0))
	if c.Now == nil {
		c.Now = time.Now
	}
}

// ringRefreshGap is the least time between two rereads of the key ring
// triggered by tokens that do not verify: a flood of forged tokens costs etcd
// at most one read a second.
const ringRefreshGap = time.Second

// Service is the identity state: key ring, caches, rate limits, audit
// writer. Its two goroutines (audit writer, token toucher) are owned by it:
// Close ends and awaits them.
type Service struct {
	cfg Config
	st  *store.Store
	log *slog.Logger

	ring            atomic.Pointer[security.KeyRing]
	lastRingRefresh atomic.Int64 // unix nanoseconds

	tokens *ttlCache[string, *messages.APIToken]
	users  *ttlCache[string, *messages.User]
	// jwts holds verified access-token claims keyed by sha256 of the token,
	// each until min(its expiry, AuthCacheTTL), so a repeated bearer skips
	// parsing and the HMAC. Only the signature check is skipped: every
	// request still goes through the user lookup (revocation, disable,
	// demotion). Keying by the hash keeps plaintext tokens out of memory
	// longer than the request.
	jwts *ttlCache[[sha256.Size]byte, *security.AccessClaims]
	// unknownTokens remembers API token ids etcd does not have, so a flood
	// of forged otx_ tokens costs one etcd read per id per AuthCacheTTL,
	// not one per request. No invalidation is needed: ids are random, so a
	// token created later never has an id someone probed before.
	unknownTokens *ttlCache[string, struct{}]

	// jwtVerifies and tokenReads count signature checks and API token
	// reads from etcd, for tests (export_test.go).
	jwtVerifies atomic.Int64
	tokenReads  atomic.Int64

	// perSource limits logins per client address, perAccount per (account,
	// client address) pair; anonymous limits every unauthenticated path per
	// client address (AllowAnonymous).
	perSource  *ratelimit.Keyed
	perAccount *ratelimit.Keyed
	anonymous  *ratelimit.Keyed
	// failures folds the audit entries of failures without credentials per
	// client address and window, so an anonymous client can cause only a
	// bounded number of audit writes.
	failures *failureFolder
	// hashSlots bounds concurrent password hashing; hashesInFlight and
	// hashesPeak observe it (export_test.go).
	hashSlots      chan struct{}
	hashesInFlight atomic.Int64
	hashesPeak     atomic.Int64

	audit   *auditWriter
	touches chan string

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New loads (or, in a new cluster, creates) the JWT key ring and starts the
// audit writer and the token toucher.
func New(ctx context.Context, st *store.Store, cfg Config, log *slog.Logger) (*Service, error) {
	cfg.SetDefaults()
	if log == nil {
		log = slog.Default()
	}
	ring, _, err := st.LoadOrCreateKeyRing(ctx, cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("load jwt key ring: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, st: st, log: log,
		tokens:        newTTLCache[string, *messages.APIToken](cfg.AuthCacheTTL, cfg.AuthCacheSize, cfg.Now),
		users:         newTTLCache[string, *messages.User](cfg.AuthCacheTTL, cfg.AuthCacheSize, cfg.Now),
		jwts:          newTTLCache[[sha256.Size]byte, *security.AccessClaims](cfg.AuthCacheTTL, cfg.AuthCacheSize, cfg.Now),
		unknownTokens: newTTLCache[string, struct{}](cfg.AuthCacheTTL, cfg.AuthCacheSize, cfg.Now),
		perSource:     ratelimit.NewBySource(cfg.LoginPerSource, cfg.LoginPerSource, cfg.LimiterSize),
		perAccount:    ratelimit.New(cfg.LoginPerAccount, cfg.LoginPerAccount, cfg.LimiterSize),
		anonymous:     ratelimit.NewBySource(cfg.AnonymousPerMinute, cfg.AnonymousPerMinute, cfg.LimiterSize),
		failures:      newFailureFolder(cfg.AuditWindow, cfg.LimiterSize),
		hashSlots:     make(chan struct{}, cfg.HashConcurrency),
		audit:         newAuditWriter(st, log, cfg.AuditBuffer),
		touches:       make(chan string, 1024),
		cancel:        cancel,
	}
	s.setRing(ring)
	s.lastRingRefresh.Store(cfg.Now().UnixNano())
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.auditLoop(runCtx) }()
	go func() { defer s.wg.Done(); s.touchLoop(runCtx) }()
	return s, nil
}

// Close ends the goroutines, flushing the audit buffer one last time. Call it
// while the store is still open, so the last entries are written.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

func (s *Service) setRing(r security.KeyRing) { s.ring.Store(&r) }

// refreshRing rereads the key ring if the last reread is at least
// ringRefreshGap old, and reports whether it did.
func (s *Service) refreshRing(ctx context.Context) bool {
	now := s.cfg.Now().UnixNano()
	last := s.lastRingRefresh.Load()
	if now-last < int64(ringRefreshGap) || !s.lastRingRefresh.CompareAndSwap(last, now) {
		return false
	}
	ring, _, err := s.st.KeyRing(ctx)
	if err != nil {
		s.log.Warn("reload jwt key ring", "err", err)
		return false
	}
	s.setRing(ring)
	return true
}

// touchLoop records API token use off the request path. It remembers when it
// last touched each token so a busy token costs etcd nothing between the
// store's once-a-minute writes.
func (s *Service) touchLoop(ctx context.Context) {
	last := make(map[string]time.Time)
	for {
		select {
		case <-ctx.Done():
			return
		case tok := <-s.touches:
			now := s.cfg.Now()
			if t, ok := last[tok]; ok && now.Sub(t) < store.TokenTouchInterval {
				continue
			}
			if len(last) >= s.cfg.AuthCacheSize {
				clear(last)
			}
			last[tok] = now
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := s.st.TouchToken(c, tok, now); err != nil && messages.KindOf(err) != messages.KindNotFound {
				s.log.Debug("touch api token", "token_id", tok, "err", err)
			}
			cancel()
		}
	}
}

// touch queues a token-use record; it never blocks a request.
func (s *Service) touch(tokenID string) {
	select {
	case s.touches <- tokenID:
	default:
	}
}
