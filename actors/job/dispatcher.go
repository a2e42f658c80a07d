package job

import (
	"context"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	clientv3 "go.etcd.io/etcd/client/v3"

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
	// Rescan is how often the dispatcher looks for claimable jobs even when no
	// watch event arrived.
	Rescan time.Duration
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

// DispatcherProps returns the props of the dispatcher. It must be a child of
// the jobs guardian: it delivers claimed jobs to its parent, which spawns one
// job actor per job.
func DispatcherProps(d Deps) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &dispatcher{deps: d, active: map[string]bool{}} })
}

type dispatcher struct {
	deps     Deps
	session  *store.Dispatcher
	cancel   context.CancelFunc
	scanning bool
	dirty    bool
	// active holds jobs this replica claimed and still runs.
	active map[string]bool
}

type (
	opened struct {
		by      *dispatcher
		session *store.Dispatcher
		err     error
	}
	wake        struct{}
	sessionLost struct{}
	scanned     struct {
		by      *dispatcher
		claimed []*messages.Job
		next    time.Time
		err     error
	}
	// Done tells the dispatcher a job actor has finished with its job.
	Done struct{ JobID string }
)

func (d *dispatcher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.open(ctx)
	case *actor.Stopping, *actor.Restarting:
		d.close()
	case opened:
		if m.by != d {
			if m.session != nil {
				_ = m.session.Close()
			}
			return
		}
		if m.err != nil {
			panic(m.err)
		}
		d.session = m.session
		d.watch(ctx)
		d.scan(ctx)
	case wake:
		if d.session == nil {
			return
		}
		if d.scanning {
			d.dirty = true
			return
		}
		d.scan(ctx)
	case scanned:
		if m.by != d {
			return
		}
		d.scanning = false
		if m.err != nil {
			d.deps.Log.Warn("job scan failed", "err", m.err)
			d.deps.Runtime.After(ctx.Self(), d.deps.BackoffBase, wake{})
		}
		for _, j := range m.claimed {
			d.active[j.ID] = true
			// Request, not Send: the job actor answers Done to the sender.
			ctx.Request(ctx.Parent(), system.Deliver{ID: j.ID, Msg: run{job: j, session: d.session}})
		}
		if !m.next.IsZero() {
			d.deps.Runtime.After(ctx.Self(), time.Until(m.next)+10*time.Millisecond, wake{})
		}
		if d.dirty {
			d.dirty = false
			d.scan(ctx)
		}
	case Done:
		delete(d.active, m.JobID)
	case sessionLost:
		panic("job: dispatcher lease lost; restarting with a new one")
	case system.Crashed:
		panic(m.Reason)
	}
}

func (d *dispatcher) open(ctx actor.Context) {
	st, cfg := d.deps.Store, d.deps.Config
	d.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		s, err := st.NewDispatcher(c, cfg.Replica, cfg.ClaimTTL)
		return opened{by: d, session: s, err: err}
	})
}

func (d *dispatcher) close() {
	if d.cancel != nil {
		d.cancel()
	}
	if d.session != nil {
		_ = d.session.Close()
		d.session = nil
	}
}

// watch turns etcd changes under the job and claim prefixes into wake
// messages, and rescans periodically in case a watch event was missed.
func (d *dispatcher) watch(ctx actor.Context) {
	rt, self, session := d.deps.Runtime, ctx.Self(), d.session
	wctx, cancel := context.WithCancel(rt.Context())
	d.cancel = cancel
	cli, rescan := d.deps.Store.Client(), d.deps.Rescan
	rt.Go(self, func(context.Context) any {
		var chans []clientv3.WatchChan
		for _, p := range store.WatchPrefixes() {
			chans = append(chans, cli.Watch(clientv3.WithRequireLeader(wctx), p, clientv3.WithPrefix()))
		}
		tick := time.NewTicker(rescan)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return nil
			case <-session.Done():
				return sessionLost{}
			case <-tick.C:
			case _, ok := <-chans[0]:
				if !ok {
					return nil
				}
			case _, ok := <-chans[1]:
				if !ok {
					return nil
				}
			}
			rt.System.Root.Send(self, wake{})
		}
	})
}

func (d *dispatcher) scan(ctx actor.Context) {
	d.scanning = true
	st, session := d.deps.Store, d.session
	active := make(map[string]bool, len(d.active))
	for id := range d.active {
		active[id] = true
	}
	d.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		jobs, err := st.Claimable(c)
		if err != nil {
			return scanned{by: d, err: err}
		}
		var claimed []*messages.Job
		for _, j := range jobs {
			if active[j.ID] {
				continue
			}
			if err := session.Claim(c, j); err != nil {
				continue // another dispatcher won it, or it changed; the next scan sees
			}
			claimed = append(claimed, j)
		}
		next, err := st.NextWakeup(c)
		return scanned{by: d, claimed: claimed, next: next, err: err}
	})
}
