package etcd

import (
	"context"
	"sync"
	"time"
)

// quorumPoll is how often the member's view of the leader is read. Raft
// itself takes an election timeout (1 s, randomized up to 2 s) to notice a
// lost majority, so polling adds little to the bound and costs an atomic
// load.
const quorumPoll = 50 * time.Millisecond

// quorum follows whether this member knows a Raft leader. A member knows
// none once it has not heard from a majority for an election timeout: a
// follower starts a (pre-)vote, which clears its leader, and a leader
// steps down under CheckQuorum. Knowing a leader is what lets a request
// that needs consensus finish; without one etcd holds it until its own
// request timeout (7 s by default) and then fails it.
type quorum struct {
	mu  sync.Mutex
	has bool
	// epoch counts the times the member went from no leader to a leader,
	// so a caller that skipped while there was none knows it came back.
	epoch uint64
	// ctx ends, with cause ErrNoQuorum, when the leader is lost; a fresh
	// one is made when a leader is known again.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// since is when the current leader became known (the last regain).
	since time.Time
}

// watch polls leader until stop closes, recording each loss and
// regain. It returns when stop closes; the member owns it.
func (q *quorum) watch(leader func() uint64, stop <-chan struct{}) {
	t := time.NewTicker(quorumPoll)
	defer t.Stop()
	for {
		q.observe(leader() != 0, time.Now())
		select {
		case <-stop:
			q.mu.Lock()
			if q.cancel != nil {
				q.cancel(ErrNoQuorum)
			}
			q.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

func (q *quorum) observe(has bool, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case has && (!q.has || q.ctx == nil):
		q.has, q.since = true, now
		q.epoch++
		q.ctx, q.cancel = context.WithCancelCause(context.Background())
	case !has && q.has:
		q.has = false
		q.cancel(ErrNoQuorum)
	}
}

// QuorumContext returns a context that ends, with cause ErrNoQuorum, when
// this member loses its leader, and false when it knows none now. Work
// that needs consensus is bound to it, so that it fails as soon as the
// loss is seen instead of waiting out etcd's request timeout.
func (m *Member) QuorumContext() (context.Context, bool) {
	if m.server.Server.Leader() == 0 {
		return nil, false
	}
	m.q.mu.Lock()
	defer m.q.mu.Unlock()
	if !m.q.has {
		return nil, false
	}
	return m.q.ctx, true
}

// HasQuorum reports whether this member knows a Raft leader now, that is
// whether it is in touch with a majority of the voters. It reads the
// member's state in memory.
func (m *Member) HasQuorum() bool { return m.server.Server.Leader() != 0 }

// QuorumEpoch returns a number that grows each time this member regains a
// leader after having none, and when it did; ok is false while it knows
// none. A loop that measures silences (heartbeats, leases) restarts its
// clock when the epoch changes: nothing could reach it meanwhile.
func (m *Member) QuorumEpoch() (epoch uint64, since time.Time, ok bool) {
	if m.server.Server.Leader() == 0 {
		return 0, time.Time{}, false
	}
	m.q.mu.Lock()
	defer m.q.mu.Unlock()
	return m.q.epoch, m.q.since, m.q.has
}
