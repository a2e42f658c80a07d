// Package election runs the control plane's cluster-wide periodic loops
// (sweeps, liveness, backups, key rotation, learner promotion, and any loop
// registered later) on exactly one replica at a time. The replicas campaign
// in an etcd election (go.etcd.io/etcd/client/v3/concurrency) bound to a
// lease of their own; the winner runs every registered loop until it loses
// the lease, its key, or shuts down, and then stops them all before another
// replica can win.
//
// Why the loops stop in time: the election key lives as long as the lease,
// which the leader keeps until TTL after the last renewal it applied. A
// replica that has heard no renewal answer for two thirds of the TTL stops
// its loops, so they end before the lease can expire on the leader, as long
// as an answer takes less than a third of the TTL to come back. A loop must
// return soon after its context ends.
package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Prefix is where the loop owner's election keys live (one key per
// campaigning replica, bound to its lease, valued with its name).
const Prefix = "/otherix/election/loops/"

// DefaultTTL is the owner's lease TTL: how long a dead owner's loops stay
// unowned at most before another replica takes them.
const DefaultTTL = 10 * time.Second

// Config describes one replica's part in the election.
type Config struct {
	// Client is this replica's etcd client (its member's, in process).
	Client *clientv3.Client
	// Name is this replica's name, the value of its election key; the
	// member name, so the member list can mark the owner.
	Name string
	// TTL is the lease TTL (default DefaultTTL, at least 2s).
	TTL time.Duration
	// Prefix is the election's key prefix (default Prefix).
	Prefix string
	// Sole, when set, reports whether this replica's member is the only
	// one in the cluster: then every key already in the election is a
	// leftover (a restored snapshot's, or this replica's before a crash)
	// and is removed, so a single-node install owns its loops at once.
	Sole func(ctx context.Context) bool
	// OnChange, when set, hears each change of this replica's ownership.
	OnChange func(owner bool)
	Log      *slog.Logger
}

// Loops is one replica's campaign and the loops it runs while it owns them.
type Loops struct {
	cfg Config

	mu   sync.Mutex
	regs []registered
	// term is the current ownership, nil while this replica is not owner.
	term *term

	owner atomic.Bool
}

type registered struct {
	name string
	run  func(ctx context.Context)
}

// term is one stretch of ownership: the loops' context and their goroutines.
type term struct {
	ctx context.Context
	wg  sync.WaitGroup
}

// New returns the loops of one replica; Run campaigns.
func New(cfg Config) *Loops {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	cfg.TTL = max(cfg.TTL, 2*time.Second)
	if cfg.Prefix == "" {
		cfg.Prefix = Prefix
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Loops{cfg: cfg}
}

// Register adds a loop that runs only while this replica owns the loops:
// run is called with a context that ends when ownership ends, in its own
// goroutine, each time ownership is gained, and must return soon after its
// context ends. A loop registered while this replica is owner starts at once.
func (l *Loops) Register(name string, run func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := registered{name: name, run: run}
	l.regs = append(l.regs, r)
	if l.term != nil {
		l.start(l.term, r)
	}
}

// Owner reports whether this replica runs the loops now.
func (l *Loops) Owner() bool { return l.owner.Load() }

func (l *Loops) start(t *term, r registered) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		r.run(t.ctx)
	}()
}

// errLost ends a term whose ownership ended other than by shutdown.
var errLost = errors.New("election: ownership lost")

// Run campaigns until ctx ends, running the registered loops while this
// replica wins. When ctx ends it stops the loops, resigns (so another
// replica takes over at once) and returns.
func (l *Loops) Run(ctx context.Context) {
	l.clearStale(ctx)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		won, err := l.campaign(ctx)
		if ctx.Err() != nil {
			return
		}
		if won {
			backoff = 100 * time.Millisecond
		}
		if err != nil && !errors.Is(err, errLost) {
			l.cfg.Log.Debug("loop owner election: retrying", "err", err)
		}
		if !won {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, l.cfg.TTL/2)
		}
	}
}

// clearStale removes the election keys that cannot belong to a live
// replica: this replica's own from before a restart (names are unique among
// members), and every key when this member is the only one.
func (l *Loops) clearStale(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, l.cfg.TTL)
	defer cancel()
	resp, err := l.cfg.Client.Get(cctx, l.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return
	}
	sole := len(resp.Kvs) > 0 && l.cfg.Sole != nil && l.cfg.Sole(cctx)
	for _, kv := range resp.Kvs {
		if string(kv.Value) != l.cfg.Name && !sole {
			continue
		}
		if kv.Lease != 0 {
			_, err = l.cfg.Client.Revoke(cctx, clientv3.LeaseID(kv.Lease))
		} else {
			_, err = l.cfg.Client.Delete(cctx, string(kv.Key))
		}
		if err == nil {
			l.cfg.Log.Info("removed a leftover loop-owner election key", "key", string(kv.Key), "owner", string(kv.Value))
		}
	}
}

// campaign opens a session, waits to win, and runs the loops until the term
// ends. won is false when it never won (the caller backs off).
func (l *Loops) campaign(ctx context.Context) (won bool, err error) {
	cli := l.cfg.Client
	secs := int64((l.cfg.TTL + time.Second - 1) / time.Second)
	gctx, cancel := context.WithTimeout(ctx, l.cfg.TTL)
	lease, err := cli.Grant(gctx, secs)
	cancel()
	if err != nil {
		return false, fmt.Errorf("election: grant lease: %w", err)
	}
	// The keepalives must outlive ctx: after a shutdown the owner still
	// resigns with its session.
	kaCtx, stopKA := context.WithCancel(context.WithoutCancel(ctx))
	defer stopKA()
	acks, err := cli.KeepAlive(kaCtx, lease.ID)
	if err != nil {
		revoke(cli, lease.ID)
		return false, fmt.Errorf("election: keep lease alive: %w", err)
	}
	var lastAck atomic.Int64
	lastAck.Store(time.Now().UnixNano())
	go func() {
		for range acks {
			lastAck.Store(time.Now().UnixNano())
		}
	}()
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithContext(kaCtx))
	if err != nil {
		revoke(cli, lease.ID)
		return false, fmt.Errorf("election: session: %w", err)
	}
	el := concurrency.NewElection(sess, l.cfg.Prefix)

	cctx, stopCampaign := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-cctx.Done():
		}
		stopCampaign()
	}()
	err = el.Campaign(cctx, l.cfg.Name)
	stopCampaign()
	if err != nil {
		sess.Orphan()
		revoke(cli, lease.ID)
		return false, err
	}

	// Won. The loops run until shutdown, the lease is lost or unheard of
	// for too long, or the key is deleted.
	limit := l.cfg.TTL * 2 / 3
	select {
	case <-sess.Done():
		revoke(cli, lease.ID)
		return false, errLost
	default:
	}
	if time.Since(time.Unix(0, lastAck.Load())) > limit {
		// Won on a lease that may already be expiring: start nothing.
		sess.Orphan()
		revoke(cli, lease.ID)
		return false, errLost
	}
	lctx, stopLoops := context.WithCancel(ctx)
	keyGone := cli.Watch(lctx, el.Key(), clientv3.WithRev(el.Rev()+1))
	t := &term{ctx: lctx}
	l.setOwner(true)
	l.mu.Lock()
	l.term = t
	for _, r := range l.regs {
		l.start(t, r)
	}
	l.mu.Unlock()
	l.cfg.Log.Info("this replica owns the periodic loops", "name", l.cfg.Name)

	check := time.NewTicker(max(l.cfg.TTL/20, 50*time.Millisecond))
	defer check.Stop()
	var why string
	for why == "" {
		select {
		case <-ctx.Done():
			why = "shutdown"
		case <-sess.Done():
			why = "lease lost"
		case resp, ok := <-keyGone:
			if !ok || resp.Err() != nil {
				// A watch that broke says nothing about the key; the
				// lease checks below still guard the term.
				keyGone = nil
				continue
			}
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE {
					why = "election key deleted"
				}
			}
		case <-check.C:
			if time.Since(time.Unix(0, lastAck.Load())) > limit {
				why = "lease not renewed in time (etcd unreachable?)"
			}
		}
	}
	stopLoops()
	l.mu.Lock()
	l.term = nil
	l.mu.Unlock()
	t.wg.Wait()
	l.setOwner(false)
	if why == "shutdown" {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := el.Resign(rctx); err != nil {
			l.cfg.Log.Warn("resign loop ownership", "err", err)
		}
		sess.Orphan()
		_, _ = cli.Revoke(rctx, lease.ID)
		l.cfg.Log.Info("resigned the periodic loops", "name", l.cfg.Name)
		return true, nil
	}
	l.cfg.Log.Warn("stopped the periodic loops: no longer their owner", "name", l.cfg.Name, "reason", why)
	sess.Orphan()
	revoke(cli, lease.ID)
	return true, errLost
}

// revoke gives a lease up, briefly: when etcd cannot be reached it expires
// by itself.
func revoke(cli *clientv3.Client, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = cli.Revoke(ctx, id)
}

func (l *Loops) setOwner(v bool) {
	l.owner.Store(v)
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(v)
	}
}

// CurrentOwner is the name of the replica that owns the loops now ("" when
// none does), read from the election keys: the oldest key wins.
func CurrentOwner(ctx context.Context, cli *clientv3.Client, prefix string) (string, error) {
	if prefix == "" {
		prefix = Prefix
	}
	resp, err := cli.Get(ctx, prefix, append(clientv3.WithFirstCreate(), clientv3.WithSerializable())...)
	if err != nil {
		return "", fmt.Errorf("election: read owner: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
