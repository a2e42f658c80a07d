package gateway

import (
	"sync"
	"time"
)

// QuorumEpochs is what the liveness loop needs of the etcd member
// (persistence/etcd.Member): a number that changes each time the member
// regains a leader after having none, and false while it has none.
type QuorumEpochs interface {
	QuorumEpoch() (epoch uint64, since time.Time, ok bool)
}

// livenessQuorum is the liveness loop's memory of the quorum.
type livenessQuorum struct {
	mu     sync.Mutex
	epoch  uint64
	since  time.Time
	paused bool
	// lastPass is when the previous pass ran, on the wall clock.
	lastPass time.Time
	// wall is the wall clock (time.Now when nil); a test seam.
	wall func() time.Time
}

// heardSince is the time from which the liveness loop may count a node's
// silence, and false when it must not judge at all. While this replica has
// no quorum it refuses heartbeats (503 no_quorum) and could write no
// demotion anyway, so the loop pauses. When quorum comes back, a node whose
// agent could reach only this replica has not been heard for as long as the
// outage lasted, through no fault of its own: silences count afresh from
// the first pass after the regain, so no node is demoted, and no VM lost,
// because of the outage. A node that is really down is demoted MissedIntervals
// intervals later, as after a restart.
//
// A pass that comes much later than the loop's period means this replica
// itself did not run (the process was stopped, its host suspended): the
// other replicas may have lost quorum meanwhile, or this one may have been
// cut off without noticing, and the heartbeat times in the rows are as old
// as that gap. Silences then count afresh from this pass as well.
func (g *Gateway) heardSince(now time.Time) (time.Time, bool) {
	l := &g.live
	l.mu.Lock()
	defer l.mu.Unlock()
	wall := time.Now()
	if l.wall != nil {
		wall = l.wall()
	}
	if !l.lastPass.IsZero() && wall.Sub(l.lastPass) > lateAfter(g.cfg.Nodes.HeartbeatInterval) {
		g.log.Info("liveness pass late: this replica was not running; node heartbeat silences count from now",
			"late_by", wall.Sub(l.lastPass).Round(time.Millisecond))
		l.since = now
	}
	l.lastPass = wall
	q := g.cfg.Quorum
	if q == nil {
		return l.since, true
	}
	epoch, _, ok := q.QuorumEpoch()
	if !ok {
		if !l.paused {
			g.log.Warn("no quorum: node liveness paused; heartbeats are refused until a majority of replicas is back")
		}
		l.paused = true
		return time.Time{}, false
	}
	if epoch != l.epoch {
		if l.epoch != 0 {
			g.log.Info("quorum regained: node heartbeat silences count from now", "at", now.UTC())
		}
		l.epoch, l.since = epoch, now
	}
	l.paused = false
	return l.since, true
}

// lateAfter is the gap between two liveness passes (every half interval)
// past which the replica is taken to have been away.
func lateAfter(interval time.Duration) time.Duration { return 2 * interval }
