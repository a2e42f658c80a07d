package job

import (
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Config tunes the dispatcher and its job actors.
type Config struct {
	// Replica names this dispatcher in claim keys.
	Replica string
	// ClaimTTL is the lease TTL: how long a dead replica's jobs stay claimed.
	ClaimTTL time.Duration
	// Resync is how often the dispatcher reloads the whole queue, healing its
	// in-memory view should a watch event ever be missed.
	Resync time.Duration
	// BackoffBase is the wait after a job's first failed attempt; it doubles
	// with each further attempt up to BackoffMax.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// AskTimeout bounds a request to a VM actor.
	AskTimeout time.Duration
}

// Deps are the dispatcher's collaborators.
type Deps struct {
	Runtime  *system.Runtime
	Store    *store.Store
	Log      *slog.Logger
	Executor Executor
	// VMs is the guardian of VM actors; job outcomes go through them.
	VMs *actor.PID
	Config
}

// claimBatch bounds one round of claims, so that a burst of new jobs is
// handed out in steady rounds rather than one long transaction spree.
const claimBatch = 64

// DispatcherProps returns the props of the dispatcher. It must be a child of
// the jobs guardian: it delivers claimed jobs to its parent, which spawns one
// job actor per job.
//
// The dispatcher keeps the queue in memory: it loads every job and claim once,
// then follows etcd's watch, so the cost of a new job is one event rather than
// a scan of the queue. Jobs backing off wait in a timer heap.
func DispatcherProps(d Deps) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &dispatcher{deps: d} })
}

type dispatcher struct {
	deps    Deps
	session *store.Dispatcher
	// life scopes the goroutines of this incarnation (session watch, resync
	// ticker, queue watch); stop ends them when the actor stops or restarts.
	life context.Context
	stop context.CancelFunc
	// stopWatch ends the current queue watch.
	stopWatch context.CancelFunc

	jobs    map[string]*messages.Job
	claimed map[string]bool // held by any dispatcher, this one included
	active  map[string]bool // claimed here and handed to a job actor
	ready   []string
	isReady map[string]bool
	timers  timerHeap
	// timerAt is the live heap entry of each job; older entries are skipped.
	timerAt  map[string]time.Time
	wakeAt   time.Time
	claiming bool
}

type (
	opened struct {
		by      *dispatcher
		session *store.Dispatcher
		err     error
	}
	synced struct {
		by   *dispatcher
		snap store.JobSnapshot
		err  error
	}
	changed struct {
		by     *dispatcher
		events []store.JobEvent
	}
	watchEnded struct {
		by  *dispatcher
		err error
	}
	resync      struct{ by *dispatcher }
	reopen      struct{ by *dispatcher }
	wake        struct{ by *dispatcher }
	sessionLost struct {
		by      *dispatcher
		session *store.Dispatcher
	}
	claimRound struct {
		by  *dispatcher
		won []*messages.Job
		// failed could not be claimed for a reason other than losing the
		// race; they are looked at again after a backoff.
		failed []string
	}
	reconsider struct {
		by  *dispatcher
		ids []string
	}
	// Done tells the dispatcher a job actor has finished with its job.
	Done struct{ JobID string }
)

func (d *dispatcher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.life, d.stop = context.WithCancel(d.deps.Runtime.Context())
		d.reset()
		d.open(ctx)
		d.deps.Runtime.Every(d.life, ctx.Self(), d.deps.Resync, resync{by: d})
	case *actor.Stopping, *actor.Restarting:
		d.close()
	case opened:
		if m.by != d {
			if m.session != nil {
				d.deps.Runtime.Go(nil, func(context.Context) any { _ = m.session.Close(); return nil })
			}
			return
		}
		if m.err != nil {
			// etcd is unreachable; keep trying rather than give up, since a
			// replica without a dispatcher would leave every job pending.
			d.deps.Log.Warn("open dispatcher lease", "err", m.err)
			d.deps.Runtime.After(ctx.Self(), d.deps.BackoffBase, reopen{by: d})
			return
		}
		d.session = m.session
		d.watchSession(ctx)
		d.load(ctx)
	case reopen:
		if m.by == d {
			d.open(ctx)
		}
	case resync:
		if m.by == d && d.session != nil {
			d.load(ctx)
		}
	case synced:
		if m.by != d {
			return
		}
		if m.err != nil {
			d.deps.Log.Warn("load job queue", "err", m.err)
			d.deps.Runtime.After(ctx.Self(), d.deps.BackoffBase, resync{by: d})
			return
		}
		d.replace(m.snap)
		d.follow(ctx, m.snap.Revision)
		d.wakeAt = time.Time{} // the heap was rebuilt; arm its earliest timer afresh
		d.schedule(ctx)
		d.dispatch(ctx)
	case changed:
		if m.by != d {
			return
		}
		for _, e := range m.events {
			d.apply(e)
			d.evaluate(ctx, e.JobID)
		}
		d.dispatch(ctx)
	case watchEnded:
		if m.by != d || m.err == nil {
			return
		}
		d.deps.Log.Warn("job watch ended; reloading the queue", "err", m.err)
		d.deps.Runtime.After(ctx.Self(), d.deps.BackoffBase, resync{by: d})
	case wake:
		if m.by != d {
			return
		}
		d.wakeAt = time.Time{}
		d.fireTimers(ctx)
		d.dispatch(ctx)
	case claimRound:
		if m.by != d {
			return
		}
		d.claiming = false
		if len(m.failed) > 0 {
			d.deps.Runtime.After(ctx.Self(), d.deps.BackoffBase, reconsider{by: d, ids: m.failed})
		}
		for _, j := range m.won {
			d.active[j.ID] = true
			d.claimed[j.ID] = true
			d.jobs[j.ID] = j
			// Request, not Send: the job actor answers Done to the sender.
			ctx.Request(ctx.Parent(), system.Deliver{ID: j.ID, Msg: run{job: j, session: d.session}})
		}
		d.dispatch(ctx)
	case reconsider:
		if m.by != d {
			return
		}
		for _, id := range m.ids {
			d.evaluate(ctx, id)
		}
		d.dispatch(ctx)
	case Done:
		delete(d.active, m.JobID)
		d.evaluate(ctx, m.JobID)
		d.dispatch(ctx)
	case sessionLost:
		if m.by != d || m.session != d.session {
			return // an older session, already replaced
		}
		// Every claim of the lost lease is gone; job actors working under it
		// fail their next write and stop. Start over with a new lease.
		d.deps.Log.Warn("dispatcher lease lost; opening a new one")
		if d.stopWatch != nil {
			d.stopWatch()
			d.stopWatch = nil
		}
		d.session = nil
		d.open(ctx)
	case system.Crashed:
		panic(m.Reason)
	}
}

func (d *dispatcher) reset() {
	d.jobs, d.claimed, d.active = map[string]*messages.Job{}, map[string]bool{}, map[string]bool{}
	d.isReady, d.timerAt = map[string]bool{}, map[string]time.Time{}
	d.ready, d.timers = nil, nil
}

func (d *dispatcher) open(ctx actor.Context) {
	st, cfg := d.deps.Store, d.deps.Config
	d.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		s, err := st.NewDispatcher(c, cfg.Replica, cfg.ClaimTTL)
		return opened{by: d, session: s, err: err}
	})
}

// close ends this incarnation's goroutines and revokes its lease, releasing
// its claims at once. The revoke is I/O, so it runs off the actor.
func (d *dispatcher) close() {
	if d.stop != nil {
		d.stop()
	}
	if d.stopWatch != nil {
		d.stopWatch()
	}
	if s := d.session; s != nil {
		d.session = nil
		d.deps.Runtime.Go(nil, func(context.Context) any { _ = s.Close(); return nil })
	}
}

// watchSession restarts the dispatcher when its lease is lost: every claim it
// held is gone, and its job actors find out on their next write.
func (d *dispatcher) watchSession(ctx actor.Context) {
	session, life := d.session, d.life
	d.deps.Runtime.Go(ctx.Self(), func(context.Context) any {
		select {
		case <-life.Done():
			return nil
		case <-session.Done():
			return sessionLost{by: d, session: session}
		}
	})
}

func (d *dispatcher) load(ctx actor.Context) {
	st := d.deps.Store
	d.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		snap, err := st.LoadJobs(c)
		return synced{by: d, snap: snap, err: err}
	})
}

// follow replaces the watch with one that starts right after rev.
func (d *dispatcher) follow(ctx actor.Context, rev int64) {
	if d.stopWatch != nil {
		d.stopWatch()
	}
	rt, self, st := d.deps.Runtime, ctx.Self(), d.deps.Store
	wctx, cancel := context.WithCancel(d.life)
	d.stopWatch = cancel
	rt.Go(self, func(context.Context) any {
		err := st.WatchJobs(wctx, rev, func(events []store.JobEvent) {
			rt.System.Root.Send(self, changed{by: d, events: events})
		})
		if wctx.Err() != nil {
			return nil // replaced or stopped on purpose
		}
		return watchEnded{by: d, err: err}
	})
}

// replace installs a fresh snapshot. Jobs this replica is running stay active.
func (d *dispatcher) replace(snap store.JobSnapshot) {
	active := d.active
	d.reset()
	d.active = active
	for _, j := range snap.Jobs {
		d.jobs[j.ID] = j
	}
	for _, id := range snap.Claimed {
		d.claimed[id] = true
	}
	for id := range d.jobs {
		d.evaluateAt(id, d.deps.Store.Now())
	}
}

func (d *dispatcher) apply(e store.JobEvent) {
	switch {
	case e.Claim && e.Claimed:
		d.claimed[e.JobID] = true
	case e.Claim:
		delete(d.claimed, e.JobID)
	case e.Job != nil:
		d.jobs[e.JobID] = e.Job
	default:
		delete(d.jobs, e.JobID)
	}
}

func (d *dispatcher) evaluate(ctx actor.Context, id string) {
	d.evaluateAt(id, d.deps.Store.Now())
	d.schedule(ctx)
}

// evaluateAt files a job as ready to claim, or under a timer for when its
// backoff ends. Jobs that are gone or held by someone are left out; a later
// event about them files them again.
func (d *dispatcher) evaluateAt(id string, now time.Time) {
	j, ok := d.jobs[id]
	if !ok || d.claimed[id] || d.active[id] || d.isReady[id] {
		return
	}
	if j.NotBefore.After(now) {
		if d.timerAt[id].Equal(j.NotBefore) {
			return
		}
		d.timerAt[id] = j.NotBefore
		heap.Push(&d.timers, timer{id: id, at: j.NotBefore})
		return
	}
	d.isReady[id] = true
	d.ready = append(d.ready, id)
}

// schedule arms one wake-up for the earliest timer.
func (d *dispatcher) schedule(ctx actor.Context) {
	if len(d.timers) == 0 {
		return
	}
	next := d.timers[0].at
	if !d.wakeAt.IsZero() && !next.Before(d.wakeAt) {
		return
	}
	d.wakeAt = next
	d.deps.Runtime.After(ctx.Self(), time.Until(next), wake{by: d})
}

func (d *dispatcher) fireTimers(ctx actor.Context) {
	now := d.deps.Store.Now()
	for len(d.timers) > 0 && !d.timers[0].at.After(now) {
		t := heap.Pop(&d.timers).(timer)
		if !d.timerAt[t.id].Equal(t.at) {
			continue // superseded by a later entry for the same job
		}
		delete(d.timerAt, t.id)
		d.evaluateAt(t.id, now)
	}
	d.schedule(ctx)
}

// dispatch claims a round of ready jobs off the actor goroutine.
func (d *dispatcher) dispatch(ctx actor.Context) {
	if d.claiming || d.session == nil || len(d.ready) == 0 {
		return
	}
	var batch []*messages.Job
	for len(d.ready) > 0 && len(batch) < claimBatch {
		id := d.ready[0]
		d.ready = d.ready[1:]
		delete(d.isReady, id)
		j, ok := d.jobs[id]
		if !ok || d.claimed[id] || d.active[id] {
			continue
		}
		c := *j
		batch = append(batch, &c)
	}
	if len(batch) == 0 {
		return
	}
	d.claiming = true
	session, life := d.session, d.life
	d.deps.Runtime.Go(ctx.Self(), func(context.Context) any {
		var won []*messages.Job
		var failed []string
		for _, j := range batch {
			if life.Err() != nil {
				break // stopping: the lease is being revoked, claims would fail
			}
			switch err := session.Claim(life, j); {
			case err == nil:
				won = append(won, j)
			case errors.Is(err, messages.ErrClaimLost):
				// Another dispatcher took the job or it changed; the watch
				// tells this one what happened.
			default:
				failed = append(failed, j.ID)
			}
		}
		// A failed claim's outcome is unknown: it may have committed on
		// this dispatcher's lease, where the watch marks the job claimed
		// and nobody would ever run it (a task pending for good, seen in
		// TestRollingRestartUnderWrites). Drop any such claim, retrying
		// through an election.
		for _, id := range failed {
			wait, deadline := 100*time.Millisecond, time.Now().Add(releaseRetryMax)
			for session.Unclaim(life, id) != nil && life.Err() == nil && time.Now().Before(deadline) {
				select {
				case <-life.Done():
				case <-time.After(wait):
				}
				wait = min(2*wait, 2*time.Second)
			}
		}
		return claimRound{by: d, won: won, failed: failed}
	})
}

type timer struct {
	id string
	at time.Time
}

// timerHeap orders jobs backing off by when they become claimable.
type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
