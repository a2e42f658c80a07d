// Package storagepool realises the storage pools the control plane assigns
// to a node: for each one it makes or checks the directory (dir) or checks
// the filesystem (btrfs), claims the path with an ownership marker, and
// reports the pool's size, use and health in each heartbeat. It creates no
// volumes: that is nodeagent/volumes, driven by agent tasks.
package storagepool

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/messages"
)

// DefaultProbeTimeout bounds how long a report waits for a pool's
// filesystem: a hung network mount must not hold up the heartbeat.
const DefaultProbeTimeout = 2 * time.Second

// Config configures a Manager.
type Config struct {
	// Cluster identifies the cluster in markers: its CA fingerprint.
	Cluster string
	// DefaultDir is the agent's --pool-dir, where a pool without a path
	// (the default pool) lives.
	DefaultDir string
	// DefaultName is the name the agent reports its --pool-dir under
	// until the control plane names its pools ("default").
	DefaultName string
	// ProbeTimeout bounds a report's wait (DefaultProbeTimeout if 0).
	ProbeTimeout time.Duration
	Log          *slog.Logger
	// Statfs is the statfs(2) seam (unix.Statfs if nil).
	Statfs func(string, *unix.Statfs_t) error
}

// Manager holds the desired pools and their last reports. It is safe for
// concurrent use: the heartbeat loop sets the desired pools and asks for
// reports.
type Manager struct {
	cfg Config
	mu  sync.Mutex
	// desired is nil until the first heartbeat answer that names pools.
	desired []messages.DesiredPool
	// state is per pool name: the last report and whether a probe runs.
	state map[string]*poolState
	wg    sync.WaitGroup
}

type poolState struct {
	want messages.DesiredPool
	// realised: the directory and marker were checked for want.
	realised bool
	report   messages.PoolStatus
	// busy: a probe is running (maybe stuck on a hung mount); no second
	// one starts until it returns.
	busy bool
	done chan struct{}
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.Statfs == nil {
		cfg.Statfs = unix.Statfs
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.DefaultName == "" {
		cfg.DefaultName = "default"
	}
	return &Manager{cfg: cfg, state: map[string]*poolState{}}
}

// SetDesired records the pools the control plane assigns to the node; nil
// (a control plane without pools) keeps what the manager had. A pool no
// longer assigned is forgotten (its directory is left as it is); a changed
// one is realised again at the next report.
func (m *Manager) SetDesired(pools []messages.DesiredPool) {
	if pools == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.desired = slices.Clone(pools)
	keep := map[string]bool{}
	for _, p := range pools {
		keep[p.Name] = true
		if st := m.state[p.Name]; st != nil && st.want != p {
			st.want, st.realised = p, false
		}
	}
	for name := range m.state {
		if !keep[name] {
			delete(m.state, name)
		}
	}
}

// Report probes every pool (realising those not yet realised) and answers
// their statuses in name order, waiting at most the probe timeout: a pool
// whose filesystem did not answer is reported with health error and its
// last known figures. Before the control plane named any pool, the agent's
// --pool-dir is reported as the default pool, as agents always did.
func (m *Manager) Report(ctx context.Context) []messages.PoolStatus {
	m.mu.Lock()
	desired := m.desired
	if desired == nil {
		desired = []messages.DesiredPool{{Name: m.cfg.DefaultName, Driver: messages.PoolDriverDir}}
	}
	var waits []chan struct{}
	for _, p := range desired {
		st := m.state[p.Name]
		if st == nil {
			st = &poolState{want: p}
			m.state[p.Name] = st
		}
		if !st.busy {
			st.busy, st.done = true, make(chan struct{})
			m.wg.Add(1)
			go m.probe(st, st.want, st.realised, st.done)
		}
		waits = append(waits, st.done)
	}
	m.mu.Unlock()

	timer := time.NewTimer(m.cfg.ProbeTimeout)
	defer timer.Stop()
	for _, w := range waits {
		select {
		case <-w:
		case <-timer.C:
		case <-ctx.Done():
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]messages.PoolStatus, 0, len(desired))
	for _, p := range desired {
		st := m.state[p.Name]
		if st == nil {
			continue
		}
		r := st.report
		if st.busy {
			r.Health = messages.PoolHealthError
			r.Message = ErrUnresponsive.Error() + " (" + m.cfg.ProbeTimeout.String() + ")"
		}
		if r.Name == "" {
			r = messages.PoolStatus{Name: p.Name, ID: p.ID, Driver: p.Driver, Path: m.dir(p), Health: r.Health, Message: r.Message}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b messages.PoolStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Wait waits until no probe runs or ctx ends (a probe stuck on a hung
// mount never returns; the agent exits without it).
func (m *Manager) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dir is where pool p lives on this node.
func (m *Manager) dir(p messages.DesiredPool) string {
	if p.Path == "" {
		return m.cfg.DefaultDir
	}
	return p.Path
}

// probe realises p when needed and measures it, then records the report
// unless the pool changed meanwhile.
func (m *Manager) probe(st *poolState, p messages.DesiredPool, realised bool, done chan struct{}) {
	defer m.wg.Done()
	defer close(done)
	r := messages.PoolStatus{Name: p.Name, ID: p.ID, Driver: p.Driver, Path: m.dir(p), Health: messages.PoolHealthOK}
	err := m.check(p, realised)
	if err == nil {
		realised = true
		r.TotalBytes, r.UsedBytes, r.FreeBytes, err = space(r.Path, m.cfg.Statfs)
	}
	if err != nil {
		r.Health, r.Message = messages.PoolHealthError, truncate(err.Error(), 512)
		realised = false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st.busy = false
	if st.want != p {
		return // changed while probing: the next report realises the new one
	}
	if err != nil && (st.report.Message != r.Message || st.report.Health != r.Health) {
		m.cfg.Log.Warn("storage pool not usable", "pool", p.Name, "path", r.Path, "err", err)
	} else if err == nil && realised && !st.realised && p.ID != "" {
		m.cfg.Log.Info("storage pool ready", "pool", p.Name, "driver", p.Driver, "path", r.Path,
			"total_bytes", r.TotalBytes, "free_bytes", r.FreeBytes)
	}
	st.realised, st.report = realised, r
}

// check validates p (the agent builds a path from it and trusts nothing)
// and realises it unless done already. A pool without an id is the
// pre-pools default: measured, never marked.
func (m *Manager) check(p messages.DesiredPool, realised bool) error {
	if p.ID == "" {
		return nil
	}
	if err := messages.ValidateDesiredPool(p); err != nil {
		return err
	}
	if realised {
		return nil
	}
	adopt := p.Path == "" || p.Path == m.cfg.DefaultDir
	return realise(p, m.dir(p), m.cfg.Cluster, adopt, m.cfg.Statfs)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
