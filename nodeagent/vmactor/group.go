package vmactor

import (
	"context"
	"sync"
)

// group owns goroutines: it refuses new ones once closed, and wait returns
// when every one it started has ended. The manager has one for everything
// its actors start, so Close can wait for all of them; each actor
// incarnation has one more, so a restart waits for the operation of the
// incarnation it replaces before the next loads the VM again.
//
// errgroup would not do: it cannot refuse work after shutdown began, and
// its Wait takes no context.
type group struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed once closed and n is 0
}

// add counts one more goroutine, unless the group is closed.
func (g *group) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

// done ends a goroutine that add counted.
func (g *group) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.closed {
		close(g.idle)
	}
}

// close refuses new goroutines; those running go on.
func (g *group) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	g.idle = make(chan struct{})
	if g.n == 0 {
		close(g.idle)
	}
}

// wait closes the group and returns once its goroutines ended, or with
// ctx's error if they did not in time.
func (g *group) wait(ctx context.Context) error {
	g.close()
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
