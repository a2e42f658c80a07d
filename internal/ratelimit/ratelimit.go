// Package ratelimit holds token buckets per key (a client address, an
// account and address pair) in maps of bounded size. The control plane's
// gateway and HTTP layer share it so that every unauthenticated path is
// limited the same way, by the TCP peer's address.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Keyed holds one token bucket per key in a map bounded to max keys. When
// full it drops only buckets that have refilled (their key has been idle long
// enough to be back at full burst, so forgetting them changes nothing). It
// never drops a bucket that is still draining: otherwise filling the map with
// junk keys would hand a victim's key a fresh burst. When every bucket is
// still draining, a new key is refused (treated as limited) until some bucket
// refills, at most burst × every later; keys already in the map are served
// as usual. Memory is therefore bounded by max whatever the number of keys
// a client invents.
type Keyed struct {
	every time.Duration // one token per every
	burst int
	max   int
	// bySource keys per client address, with IPv6 bucketed by /64
	// (SourceKey): one host usually holds a whole /64.
	bySource bool

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// New is a Keyed map allowing perMinute events per key per minute with the
// given burst, holding at most max keys.
func New(perMinute, burst, max int) *Keyed {
	return &Keyed{every: time.Minute / time.Duration(max1(perMinute)), burst: max1(burst), max: max1(max),
		m: make(map[string]*rate.Limiter)}
}

// NewBySource is a Keyed map whose keys are client addresses, folded by
// SourceKey.
func NewBySource(perMinute, burst, max int) *Keyed {
	l := New(perMinute, burst, max)
	l.bySource = true
	return l
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// Allow takes one token from key's bucket at now.
func (l *Keyed) Allow(key string, now time.Time) bool {
	ok, _ := l.Take(key, now)
	return ok
}

// Take takes one token from key's bucket at now, or reports how long until
// one is available (at least one refill period when the map is full).
func (l *Keyed) Take(key string, now time.Time) (bool, time.Duration) {
	if l.bySource {
		key = SourceKey(key)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= l.max {
			l.evict(now)
			if len(l.m) >= l.max {
				return false, l.every
			}
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.m[key] = lim
	}
	if lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - lim.TokensAt(now)
	return false, time.Duration(missing * float64(l.every))
}

// Len is the number of keys held.
func (l *Keyed) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// evict drops the buckets that are back at full burst, and only those.
func (l *Keyed) evict(now time.Time) {
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
}

// SourceKey is the rate-limit key of a client address: an IPv4 address (also
// IPv4-mapped IPv6) as is, an IPv6 address as its /64, since a host commonly
// owns a whole /64 and could otherwise take a fresh bucket per address.
// Anything that does not parse as an address is its own key.
func SourceKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}
