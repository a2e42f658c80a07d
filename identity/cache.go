package identity

import (
	"sync"
	"time"
)

// ttlCache is a small bounded map whose entries expire after ttl. The
// authentication path reads it on every request, so it is one mutex and one
// map lookup; when full it first drops expired entries and then arbitrary
// ones (map order), which is enough for a cache whose misses only cost an
// etcd read.
type ttlCache[K comparable, V any] struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[K]cacheEntry[V]
}

type cacheEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[K comparable, V any](ttl time.Duration, max int, now func() time.Time) *ttlCache[K, V] {
	return &ttlCache[K, V]{ttl: ttl, max: max, now: now, m: make(map[K]cacheEntry[V])}
}

// get returns the live value under k.
func (c *ttlCache[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v under k for ttl.
func (c *ttlCache[K, V]) put(k K, v V) {
	c.putUntil(k, v, time.Time{})
}

// putUntil stores v under k for ttl, or until notAfter when that is sooner
// (zero notAfter: no bound). An entry that would already be dead is not
// stored.
func (c *ttlCache[K, V]) putUntil(k K, v V, notAfter time.Time) {
	if c.ttl <= 0 {
		return
	}
	now := c.now()
	expires := now.Add(c.ttl)
	if !notAfter.IsZero() && notAfter.Before(expires) {
		expires = notAfter
	}
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.evict(now)
	}
	c.m[k] = cacheEntry[V]{v: v, expires: expires}
}

// evict makes room: expired entries first, then a tenth of the rest.
func (c *ttlCache[K, V]) evict(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) < c.max*9/10 {
			return
		}
		delete(c.m, k)
	}
}

// drop forgets k at once (revocation on this replica).
func (c *ttlCache[K, V]) drop(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

// dropIf forgets every entry whose value matches.
func (c *ttlCache[K, V]) dropIf(match func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if match(e.v) {
			delete(c.m, k)
		}
	}
}
