package gateway

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiterMap holds one token bucket per key (a client address, an account)
// in a map bounded to max keys. When full it drops only buckets that have
// refilled (their key has been idle long enough to be back at full burst, so
// forgetting them changes nothing). It never drops a bucket that is still
// draining: otherwise filling the map with junk keys would hand a victim's key
// a fresh burst. When every bucket is still draining, a new key is refused
// (treated as limited) until some bucket refills, at most burst × every
// later; keys already in the map are served as usual.
type limiterMap struct {
	every time.Duration // one token per every
	burst int
	max   int
	// bySource keys per client address, with IPv6 bucketed by /64
	// (sourceKey): one host usually holds a whole /64.
	bySource bool

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newLimiterMap(perMinute, burst, max int) *limiterMap {
	return &limiterMap{every: time.Minute / time.Duration(max1(perMinute)), burst: burst, max: max,
		m: make(map[string]*rate.Limiter)}
}

// newSourceLimiterMap is a limiterMap keyed by client address (sourceKey).
func newSourceLimiterMap(perMinute, burst, max int) *limiterMap {
	l := newLimiterMap(perMinute, burst, max)
	l.bySource = true
	return l
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// allow takes one token from key's bucket at now.
func (l *limiterMap) allow(key string, now time.Time) bool {
	if l.bySource {
		key = sourceKey(key)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= l.max {
			l.evict(now)
			if len(l.m) >= l.max {
				return false
			}
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

// evict drops the buckets that are back at full burst, and only those.
func (l *limiterMap) evict(now time.Time) {
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
}

// sourceKey is the rate-limit key of a client address: an IPv4 address (also
// IPv4-mapped IPv6) as is, an IPv6 address as its /64, since a host commonly
// owns a whole /64 and could otherwise take a fresh bucket per address.
// Anything that does not parse as an address is its own key.
func sourceKey(addr string) string {
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
