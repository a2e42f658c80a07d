package vmactor

import (
	"cmp"
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/nodeagent/vmstats"
)

// DefaultMetricsInterval is how often a running VM is sampled when
// Config.MetricsInterval is zero.
const DefaultMetricsInterval = 10 * time.Second

// sampleTimeout bounds one sample: three QMP queries and a few reads of
// /proc and /sys, answered in milliseconds unless QEMU is wedged.
const sampleTimeout = 5 * time.Second

// Messages of the sampling: the manager's ticker sends metricsTick to
// every actor; the actor samples off its mailbox and gets sampled back.
type (
	metricsTick struct{}
	sampled     struct {
		proc *qemu.Process
		m    messages.VMMetrics
		// noBalloon: QEMU said the VM has no balloon device, which does
		// not change while this QEMU runs, so it is not asked again.
		noBalloon bool
		err       error
	}
)

// metricsState is an actor's sampling: one sample at a time, and the last
// one of the QEMU it was taken of, for rates.
type metricsState struct {
	sampling  bool
	proc      *qemu.Process // the QEMU last is of
	last      *messages.VMMetrics
	noBalloon bool
}

// onMetricsTick samples the VM if its QEMU runs and its monitor is
// connected. The QMP queries go over the actor's own connection (QEMU
// serves one client; Monitor is safe for concurrent use) on a goroutine
// this incarnation owns, so a slow QEMU never holds the mailbox.
func (a *vmActor) onMetricsTick(ctx actor.Context) {
	st := a.st
	if st.proc == nil || st.mon == nil || st.rec == nil || isClosed(st.proc.Exited()) {
		a.mx = metricsState{}
		a.m.setMetrics(a.id, nil)
		return
	}
	if a.mx.sampling || a.m.stats == nil {
		return
	}
	if a.mx.proc != st.proc {
		a.mx = metricsState{proc: st.proc}
	}
	in := sampleInput{proc: st.proc, mon: st.mon, name: st.rec.Name, taps: slices.Clone(st.rec.Taps),
		prev: a.mx.last, noBalloon: a.mx.noBalloon}
	a.mx.sampling = true
	self, sys, c := ctx.Self(), ctx.ActorSystem(), a.ctx
	// Not goRun: its answer to a panic is an opDone, which would end the
	// operation under way and drop the VM's handles; a failed sample must
	// only fail itself.
	ok := a.spawn(func() {
		res := sampled{proc: in.proc, err: errors.New("vm sample panicked")}
		func() {
			defer func() {
				if p := recover(); p != nil {
					a.m.cfg.Log.Error("vm sample panicked", "vm", a.id, "panic", p, "stack", string(debug.Stack()))
				}
			}()
			res = a.m.sample(c, a.id, in)
		}()
		if c.Err() == nil {
			sys.Root.Send(self, fromGo{from: a, msg: res})
		}
	})
	if !ok {
		a.mx.sampling = false
	}
}

// onSampled keeps a sample of the QEMU that still runs and publishes it.
func (a *vmActor) onSampled(s sampled) {
	a.mx.sampling = false
	if s.proc != a.st.proc || a.mx.proc != s.proc {
		return // QEMU changed while the sample was taken
	}
	if s.err != nil {
		// A stopping VM fails its sample; the next tick sees it gone.
		a.m.cfg.Log.Debug("sample vm", "vm", a.id, "err", s.err)
		return
	}
	m := s.m
	a.mx.last, a.mx.noBalloon = &m, s.noBalloon
	a.m.setMetrics(a.id, &m)
}

type sampleInput struct {
	proc      *qemu.Process
	mon       *qemu.Monitor
	name      string
	taps      []string
	prev      *messages.VMMetrics
	noBalloon bool
}

// sample reads one VM's counters: vCPU threads and RSS from /proc, drives
// and balloon from QEMU, taps from /sys.
func (m *Manager) sample(ctx context.Context, id string, in sampleInput) sampled {
	if h := m.beforeSample.Load(); h != nil {
		(*h)(id)
	}
	out := sampled{proc: in.proc, noBalloon: in.noBalloon}
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	cpus, err := in.mon.VCPUs(ctx)
	if err != nil {
		out.err = err
		return out
	}
	tids := make([]int, 0, len(cpus))
	for _, c := range cpus {
		tids = append(tids, c.ThreadID)
	}
	cpu, err := m.stats.ThreadsCPUSeconds(in.proc.Pid, tids)
	if err != nil {
		out.err = err
		return out
	}
	rss, err := m.stats.RSSBytes(in.proc.Pid)
	if err != nil {
		out.err = err
		return out
	}
	blocks, err := in.mon.BlockStats(ctx)
	if err != nil {
		out.err = err
		return out
	}
	cur := messages.VMMetrics{ID: id, Name: in.name, VCPUs: len(cpus), CPUSeconds: cpu, RSSBytes: rss}
	for _, b := range blocks {
		// By disk, not by top node: a snapshot puts a new node on top
		// ("disk0-s1") and the device's counters carry on under it.
		name := cmp.Or(qemu.DiskOfNode(b.NodeName), b.Device)
		if name == "" || len(name) > messages.MaxMetricsDeviceName || len(cur.Drives) == messages.MaxMetricsDrives {
			continue
		}
		cur.Drives = append(cur.Drives, messages.DriveMetrics{Device: name, ReadBytes: b.Stats.ReadBytes,
			WriteBytes: b.Stats.WriteBytes, ReadOps: b.Stats.ReadOps, WriteOps: b.Stats.WriteOps})
	}
	if !in.noBalloon {
		actual, err := in.mon.Balloon(ctx)
		switch {
		case errors.Is(err, qemu.ErrNoBalloon):
			out.noBalloon = true
		case err != nil:
			out.err = err
			return out
		default:
			cur.BalloonBytes = &actual
		}
	}
	for _, tap := range in.taps {
		if len(cur.NICs) == messages.MaxMetricsNICs {
			break
		}
		c, err := m.stats.Tap(tap)
		if err != nil {
			// A tap the data plane is re-making: this sample goes without.
			continue
		}
		cur.NICs = append(cur.NICs, vmstats.GuestNIC(tap, c))
	}
	cur.SampledAt = m.cfg.Now().UTC()
	out.m = vmstats.WithRates(in.prev, cur)
	return out
}

// setMetrics publishes (or, with nil, withdraws) a VM's latest sample.
func (m *Manager) setMetrics(id string, s *messages.VMMetrics) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s == nil {
		delete(m.metrics, id)
		return
	}
	if _, ok := m.observed[id]; !ok {
		return // the VM went while it was sampled
	}
	m.metrics[id] = *s
}

// Metrics returns the latest sample of every running VM, busiest (by CPU)
// first: the order in which a heartbeat keeps them when it must drop some.
func (m *Manager) Metrics() []messages.VMMetrics {
	m.mu.Lock()
	out := make([]messages.VMMetrics, 0, len(m.metrics))
	for _, s := range m.metrics {
		s.Drives, s.NICs = slices.Clone(s.Drives), slices.Clone(s.NICs)
		out = append(out, s)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b messages.VMMetrics) int {
		if c := cmp.Compare(b.CPUPercent, a.CPUPercent); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// runMetrics sends a metricsTick to every actor each interval until the
// manager closes. Ticks are not counted in flight: one lost to an actor
// that is retiring is not missed.
func (m *Manager) runMetrics(every time.Duration, quit <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return
		}
		for _, pid := range m.actors {
			m.sys.Root.Send(pid, metricsTick{})
		}
		m.mu.Unlock()
	}
}
