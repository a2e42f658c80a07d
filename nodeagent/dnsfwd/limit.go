package dnsfwd

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter holds one token bucket per source address. The map is bounded:
// when it is full, buckets idle long enough to have refilled are dropped
// (forgetting them loses nothing), and failing that an arbitrary one.
type limiter struct {
	rate  rate.Limit
	burst int
	max   int
	// idle is how long a bucket takes to refill completely.
	idle time.Duration
	now  func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newLimiter(r rate.Limit, burst, max int, now func() time.Time) *limiter {
	idle := time.Duration(float64(burst) / float64(r) * float64(time.Second))
	return &limiter{rate: r, burst: burst, max: max, idle: idle, now: now, sources: map[netip.Addr]*bucket{}}
}

// allow takes a token from src's bucket.
func (l *limiter) allow(src netip.Addr) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[src]
	if b == nil {
		if len(l.sources) >= l.max {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.sources[src] = b
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

// evict makes room for one more source.
func (l *limiter) evict(now time.Time) {
	for a, b := range l.sources {
		if now.Sub(b.last) >= l.idle {
			delete(l.sources, a)
		}
	}
	for a := range l.sources {
		if len(l.sources) < l.max {
			return
		}
		delete(l.sources, a)
	}
}

// size is the number of tracked sources.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}
