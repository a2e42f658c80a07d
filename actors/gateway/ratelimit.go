package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiterMap holds one token bucket per key (a client address, an account)
// in a map bounded to max keys. When full it drops buckets that have refilled
// (their key has been idle long enough to be back at full burst, so
// forgetting them changes nothing), and if that is not enough, arbitrary
// ones: under a flood of distinct keys a forgotten key gets a fresh burst,
// which bounds memory at the price of some precision.
type limiterMap struct {
	every time.Duration // one token per every
	burst int
	max   int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newLimiterMap(perMinute, burst, max int) *limiterMap {
	return &limiterMap{every: time.Minute / time.Duration(max1(perMinute)), burst: burst, max: max,
		m: make(map[string]*rate.Limiter)}
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// allow takes one token from key's bucket at now.
func (l *limiterMap) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= l.max {
			l.evict(now)
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

func (l *limiterMap) evict(now time.Time) {
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
	for k := range l.m {
		if len(l.m) < l.max*9/10 {
			return
		}
		delete(l.m, k)
	}
}
