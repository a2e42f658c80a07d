package images

import (
	"context"
	"sync"
)

// flight is one download shared by every Ensure waiting for the same URL.
// It is keyed by the whole URL, never by a part of it: two URLs are two
// sources, whatever their file names.
type flight struct {
	url    string
	sha    string     // the digest the first caller asked for; "" for none
	pull   PullPolicy // the first caller's policy (never PullNever)
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed once img and err are set

	img Image
	err error

	// waiters and abandoned are guarded by Cache.mu. An abandoned flight
	// has been cancelled because nobody waits; a newcomer starts afresh.
	waiters   int
	abandoned bool

	pmu       sync.Mutex // guards the fields below and serialises callbacks
	subs      map[int]Progress
	nextSub   int
	lastDone  int64
	lastTotal int64
}

// join adds the caller to the flight for url, starting one if needed, and
// subscribes progress. The returned id unsubscribes in leave.
func (c *Cache) join(url, sha string, pull PullPolicy, progress Progress) (*flight, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flights[url]
	if f == nil || f.abandoned {
		prev := f
		f = &flight{url: url, sha: sha, pull: pull, done: make(chan struct{}), subs: map[int]Progress{}, lastTotal: -1}
		f.ctx, f.cancel = context.WithCancel(c.ctx)
		c.flights[url] = f
		c.wg.Add(1)
		go c.run(f, prev)
	}
	f.waiters++
	return f, f.subscribe(progress)
}

// leave removes a caller; the last one to go cancels an unfinished download.
func (c *Cache) leave(f *flight, sub int) {
	f.unsubscribe(sub)
	c.mu.Lock()
	defer c.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	select {
	case <-f.done:
	default:
		f.abandoned = true
		f.cancel()
	}
}

// run owns the download goroutine of f.
func (c *Cache) run(f *flight, prev *flight) {
	defer c.wg.Done()
	defer f.cancel()
	// An abandoned predecessor may still be writing the partial file; two
	// writers would corrupt it.
	if prev != nil {
		<-prev.done
	}
	img, err := c.download(f.ctx, f.url, f.sha, f.pull, f.report)
	if err == nil {
		// The new base is the youngest: eviction makes room around it.
		_ = c.MarkUsed(img.SHA256)
		c.touch(img.SHA256)
		if c.maxCache > 0 {
			c.evictLogged()
		}
	}
	c.mu.Lock()
	f.img, f.err = img, err
	if c.flights[f.url] == f {
		delete(c.flights, f.url)
	}
	c.mu.Unlock()
	close(f.done)
}

func (f *flight) subscribe(p Progress) int {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	id := f.nextSub
	f.nextSub++
	if p != nil {
		f.subs[id] = p
		// A late joiner learns where the download already is.
		if f.lastDone > 0 {
			p(f.lastDone, f.lastTotal)
		}
	}
	return id
}

// unsubscribe waits for a callback in progress, so none runs after Ensure
// has returned.
func (f *flight) unsubscribe(id int) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	delete(f.subs, id)
}

func (f *flight) report(done, total int64) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	f.lastDone, f.lastTotal = done, total
	for _, p := range f.subs {
		p(done, total)
	}
}
