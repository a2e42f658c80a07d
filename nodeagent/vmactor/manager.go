// Package vmactor is the agent's VM supervisor: one protoactor actor per VM
// serializes every lifecycle operation of that VM and owns its QEMU process,
// QMP connection and serial log. The manager in front of the actors keeps
// the agent's tasks, keyed by the control plane's job id, so that a job
// delivered twice finds the task it already started.
package vmactor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/nodeagent/vmstats"
)

// Config is what the manager needs of the node.
type Config struct {
	// StateDir holds one directory per VM: its record and serial log.
	StateDir string
	// RunDir holds one directory per VM for QEMU's pid file and sockets. It
	// must be short: unix socket paths are limited to 107 bytes.
	RunDir string
	// DiskDir is where VM disks and seeds live (the default pool).
	DiskDir string
	Images  *images.Cache
	// Accel is the accelerator QEMU runs with: kvm or tcg.
	Accel string
	// Binaries maps a guest arch to its QEMU binary; missing entries use
	// qemu-system-x86_64 / qemu-system-aarch64 from PATH.
	Binaries map[string]string
	// QEMUUser is who QEMU runs as; nil keeps the agent's user (root only
	// when the operator opted out with --qemu-user root).
	QEMUUser *qemu.User
	// Sandbox runs QEMU under seccomp (qemu.SandboxOpts).
	Sandbox bool
	// StopTimeout is how long a graceful stop waits when the task names no
	// timeout (2 minutes by default).
	StopTimeout time.Duration
	// SerialLogBytes bounds each VM's serial log on disk (1 MiB by default,
	// at least MinSerialLogBytes).
	SerialLogBytes int64
	// Console tunes the console hubs (session queue and input bounds).
	Console console.Options
	// TaskRetention is how long a finished task is kept for repeated
	// submissions and polls (1 hour by default).
	TaskRetention time.Duration
	// Network makes the host side of VM NICs (taps on their networks'
	// bridges); nil means this node runs no data plane, and a VM with NICs
	// fails to create or start with network_unavailable.
	Network Network
	// MetricsInterval is how often each running VM is sampled for
	// Metrics (DefaultMetricsInterval when 0; negative turns sampling off).
	MetricsInterval time.Duration
	// Stats reads /proc and /sys for the samples (the host's when nil).
	Stats *vmstats.Reader
	// Changed, if set, is called when a VM's observed state changed on its
	// own (the guest powered off, panicked, paused on a disk error): the
	// agent asks for a heartbeat now rather than at the next interval.
	Changed func()
	Log     *slog.Logger
	Now     func() time.Time
}

// Network is the node's data plane as VMs need it.
type Network interface {
	// EnsureNICs makes the taps of vm's NICs, attached to their networks,
	// and returns the tap names in NIC order. It keeps them until
	// ReleaseNICs.
	EnsureNICs(ctx context.Context, vmID string, nics []messages.NICStatus) ([]string, error)
	// ReleaseNICs removes vm's taps; the manager has already dropped the VM
	// from NICs.
	ReleaseNICs(ctx context.Context, vmID string) error
}

func (c *Config) defaults() {
	if c.StopTimeout <= 0 {
		c.StopTimeout = 2 * time.Minute
	}
	if c.SerialLogBytes <= 0 {
		c.SerialLogBytes = 1 << 20
	}
	c.SerialLogBytes = max(c.SerialLogBytes, MinSerialLogBytes)
	if c.TaskRetention <= 0 {
		c.TaskRetention = time.Hour
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// MinSerialLogBytes is the least serial log a VM keeps: boot output must
// survive for `logs` even if nobody was attached.
const MinSerialLogBytes = 256 << 10

// Manager owns the VM actors and the agent's tasks.
type Manager struct {
	cfg Config
	sys *actor.ActorSystem
	// root spawns the VM actors under the supervisor of supervisor.go.
	root *actor.RootContext
	// g owns every goroutine the actors start; Close waits for it.
	g group
	// beforeOp, if set, is called by an actor as it takes the next item
	// off its queue: tests make an actor panic there.
	beforeOp atomic.Pointer[func(id, op string)]
	// beforeSample, if set, is called as a VM's sample starts: tests make
	// a sample panic there.
	beforeSample atomic.Pointer[func(id string)]
	// failStep, if set, is asked before each step of a create or start
	// whether to fail it: tests fail each step in turn.
	failStep func(id, step string) error

	mu       sync.Mutex
	actors   map[string]*actor.PID
	inflight map[string]int // messages sent to a VM actor and not yet received
	tasks    map[string]*taskEntry
	observed map[string]messages.VMObserved
	logs     map[string]*qemu.SerialLog
	hubs     map[string]*console.Hub // VMs whose QEMU runs, for Console
	// nics holds the NICs of every VM with a record on this node, for the
	// data plane: filled synchronously by Recover, so a reconcile after an
	// agent restart never drops the taps of running VMs.
	nics map[string][]messages.NICStatus
	// metrics holds each running VM's latest sample (metrics.go).
	metrics map[string]messages.VMMetrics
	// stats reads the host's counters; nil turns sampling off.
	stats       *vmstats.Reader
	stopMetrics chan struct{}
	closed      bool
	wake        wakeLimiter // events.go
}

// taskEntry is one task and a channel closed (and replaced) at each change,
// which is what a long poll waits on.
type taskEntry struct {
	task    messages.AgentTask
	req     messages.AgentTaskRequest
	changed chan struct{}
}

// New starts a manager. Recover must be called before serving so VMs that
// exist on this node are found again.
func New(cfg Config) (*Manager, error) {
	cfg.defaults()
	for _, d := range []string{cfg.StateDir, cfg.RunDir, cfg.DiskDir} {
		if d == "" {
			return nil, fmt.Errorf("vmactor: state, run and disk dirs are required")
		}
		// Records keep paths built from these dirs and QEMU gets them:
		// a relative one would change meaning with the working directory.
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("vmactor: dir %q: want an absolute path", d)
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("vmactor: %w", err)
		}
	}
	if cfg.Images == nil {
		return nil, fmt.Errorf("vmactor: an image cache is required")
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(levelFilter{cfg.Log.Handler(), slog.LevelWarn})
	}))
	m := &Manager{cfg: cfg, sys: sys, actors: map[string]*actor.PID{}, inflight: map[string]int{},
		tasks: map[string]*taskEntry{}, observed: map[string]messages.VMObserved{},
		logs: map[string]*qemu.SerialLog{}, hubs: map[string]*console.Hub{},
		nics: map[string][]messages.NICStatus{}, metrics: map[string]messages.VMMetrics{},
		stopMetrics: make(chan struct{})}
	m.root = actor.NewRootContext(sys, nil).WithGuardian(m.supervisor())
	if cfg.MetricsInterval >= 0 {
		m.stats = cfg.Stats
		if m.stats == nil {
			st, err := vmstats.Host()
			if err != nil {
				cfg.Log.Warn("vm metrics off: cannot read /proc", "err", err)
			}
			m.stats = st
		}
	}
	if m.stats != nil && m.g.add() {
		every := cmp.Or(cfg.MetricsInterval, DefaultMetricsInterval)
		go func() {
			defer m.g.done()
			m.runMetrics(every, m.stopMetrics)
		}()
	}
	return m, nil
}

// Recover starts an actor for every VM with state on this node; each loads
// its record and re-adopts its QEMU if that still runs.
func (m *Manager) Recover() error {
	entries, err := os.ReadDir(m.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("vmactor: recover: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range entries {
		if !e.IsDir() || !messages.ValidID(e.Name()) {
			continue
		}
		if _, err := os.Stat(filepath.Join(m.cfg.StateDir, e.Name(), recordFile)); err != nil {
			continue
		}
		if rec, err := loadRecord(m.vmStateDir(e.Name())); err == nil && rec != nil && len(rec.NICs) > 0 {
			m.nics[e.Name()] = slices.Clone(rec.NICs)
		}
		m.actorLocked(e.Name())
	}
	return nil
}

// Close stops the actors and waits, until ctx ends, for every goroutine they
// started; it returns ctx's error if some still ran then. It never stops a
// QEMU: VMs keep running while the agent is away and are re-adopted by the
// next one.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return m.g.wait(ctx)
	}
	m.closed = true
	close(m.stopMetrics)
	futures := make([]*actor.Future, 0, len(m.actors))
	for _, pid := range m.actors {
		futures = append(futures, m.sys.Root.StopFuture(pid))
	}
	m.mu.Unlock()
	for _, f := range futures {
		_ = f.Wait()
	}
	// Stopped actors cancelled their operations; these end now.
	err := m.g.wait(ctx)
	if err != nil {
		err = fmt.Errorf("vmactor: close: vm operations still running: %w", err)
	}
	m.stopWakes()
	m.sys.Shutdown()
	return err
}

// actorLocked returns id's actor, spawning it if needed. m.mu is held.
func (m *Manager) actorLocked(id string) *actor.PID {
	if pid, ok := m.actors[id]; ok {
		return pid
	}
	// Under the supervisor of supervisor.go: a crashed actor restarts,
	// reloads its record and re-attaches to QEMU.
	pid := m.root.Spawn(actor.PropsFromProducer(func() actor.Actor { return newVMActor(m, id) }))
	m.actors[id] = pid
	return pid
}

// send hands msg to id's actor (spawning it) and counts it in flight, so the
// actor never retires while a message is on its way to it.
func (m *Manager) send(id string, msg any) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return messages.Errorf(messages.KindUnavailable, "agent_stopping", "the agent is stopping")
	}
	pid := m.actorLocked(id)
	m.inflight[id]++
	m.sys.Root.Send(pid, msg)
	return nil
}

// received is called by an actor for each message that send counted.
func (m *Manager) received(id string) {
	m.mu.Lock()
	m.inflight[id]--
	if m.inflight[id] <= 0 {
		delete(m.inflight, id)
	}
	m.mu.Unlock()
}

// retire forgets a VM that no longer exists on this node, unless a message
// is on its way to its actor. It reports whether the actor may stop.
func (m *Manager) retire(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inflight[id] > 0 {
		return false
	}
	delete(m.actors, id)
	delete(m.observed, id)
	delete(m.logs, id)
	delete(m.hubs, id)
	delete(m.metrics, id)
	return true
}

// publish records what an actor observes of its VM, for heartbeats and reads.
func (m *Manager) publish(o messages.VMObserved) {
	m.mu.Lock()
	m.observed[o.ID] = o
	m.mu.Unlock()
}

func (m *Manager) unpublish(id string) {
	m.mu.Lock()
	delete(m.observed, id)
	delete(m.logs, id)
	delete(m.hubs, id)
	delete(m.metrics, id)
	m.mu.Unlock()
}

// setLog makes a VM's serial log readable through Log.
func (m *Manager) setLog(id string, l *qemu.SerialLog) {
	m.mu.Lock()
	m.logs[id] = l
	m.mu.Unlock()
}

// setHub makes a VM's console reachable through Console; nil removes it.
func (m *Manager) setHub(id string, h *console.Hub) {
	m.mu.Lock()
	if h == nil {
		delete(m.hubs, id)
	} else {
		m.hubs[id] = h
	}
	m.mu.Unlock()
}

// dialConsole connects a hub to the VM's serial socket; the hub writes l.
func (m *Manager) dialConsole(id string, l *qemu.SerialLog) (*console.Hub, error) {
	opts := m.cfg.Console
	opts.Log = m.cfg.Log.With("vm", id)
	return console.Dial(qemu.SerialPath(m.vmRunDir(id)), l, opts)
}

// Console attaches a session to a running VM's serial console: mode is
// messages.ConsoleInteractive or messages.ConsoleReadOnly; force takes the
// interactive slot from the current writer. The caller carries the session
// and must Close it when its client goes away.
func (m *Manager) Console(id, mode string, force bool) (*console.Session, error) {
	m.mu.Lock()
	_, known := m.observed[id]
	h := m.hubs[id]
	m.mu.Unlock()
	if !known {
		return nil, vmNotFound(id)
	}
	if h == nil {
		return nil, messages.Errorf(messages.KindConflict, "vm_not_running", "vm %s is not running: it has no console", id)
	}
	s, err := h.Attach(mode, force)
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, console.ErrBusy):
		return nil, messages.Errorf(messages.KindConflict, "console_busy",
			"another interactive console session is attached to vm %s; attach read-only, or force to take over", id)
	case errors.Is(err, console.ErrMode):
		return nil, messages.Invalid("mode", "must be interactive or readonly")
	case errors.Is(err, console.ErrClosed):
		return nil, messages.Errorf(messages.KindConflict, "vm_not_running", "vm %s is not running: its console has ended", id)
	}
	return nil, fmt.Errorf("console of vm %s: %w", id, err)
}

// Submit starts a task or returns the one already known by req.ID.
func (m *Manager) Submit(req messages.AgentTaskRequest) (*messages.AgentTask, bool, error) {
	now := m.cfg.Now().UTC()
	m.mu.Lock()
	m.sweepLocked(now)
	if e, ok := m.tasks[req.ID]; ok {
		defer m.mu.Unlock()
		if e.req.Kind != req.Kind || e.req.VM.ID != req.VM.ID {
			return nil, false, messages.Errorf(messages.KindConflict, "task_id_conflict",
				"task %s exists for %s of vm %s, not %s of vm %s", req.ID, e.req.Kind, e.req.VM.ID, req.Kind, req.VM.ID)
		}
		t := e.task
		return &t, false, nil
	}
	e := &taskEntry{req: req, changed: make(chan struct{}),
		task: messages.AgentTask{ID: req.ID, Kind: req.Kind, VMID: req.VM.ID, State: messages.TaskPending,
			CreatedAt: now, UpdatedAt: now}}
	m.tasks[req.ID] = e
	t := e.task
	m.mu.Unlock()
	if err := m.send(req.VM.ID, runTask{id: req.ID, req: req}); err != nil {
		m.mu.Lock()
		delete(m.tasks, req.ID)
		m.mu.Unlock()
		return nil, false, err
	}
	return &t, true, nil
}

// sweepLocked drops finished tasks older than the retention.
func (m *Manager) sweepLocked(now time.Time) {
	for id, e := range m.tasks {
		if e.task.FinishedAt != nil && now.Sub(*e.task.FinishedAt) > m.cfg.TaskRetention {
			delete(m.tasks, id)
		}
	}
}

// update changes a task and wakes its long polls.
func (m *Manager) update(id string, f func(t *messages.AgentTask)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.tasks[id]
	if !ok || messages.Terminal(e.task.State) {
		return
	}
	before := e.task
	f(&e.task)
	if e.task.State == before.State && e.task.Progress == before.Progress && e.task.Message == before.Message {
		return
	}
	e.task.UpdatedAt = m.cfg.Now().UTC()
	if messages.Terminal(e.task.State) {
		at := e.task.UpdatedAt
		e.task.FinishedAt = &at
	}
	close(e.changed)
	e.changed = make(chan struct{})
}

// Task returns a task; with wait it returns once the task is terminal or
// changed, or wait passed.
func (m *Manager) Task(ctx context.Context, id string, wait time.Duration) (*messages.AgentTask, error) {
	m.mu.Lock()
	e, ok := m.tasks[id]
	if !ok {
		m.mu.Unlock()
		return nil, messages.Errorf(messages.KindNotFound, "task_not_found", "no task %s on this node", id)
	}
	t, changed := e.task, e.changed
	m.mu.Unlock()
	if wait <= 0 || messages.Terminal(t.State) {
		return &t, nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-changed:
	case <-timer.C:
	case <-ctx.Done():
	}
	m.mu.Lock()
	t = e.task
	m.mu.Unlock()
	return &t, nil
}

// VMs returns every VM on this node as observed now.
func (m *Manager) VMs() []messages.VMObserved {
	m.mu.Lock()
	out := make([]messages.VMObserved, 0, len(m.observed))
	for _, o := range m.observed {
		out = append(out, o)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b messages.VMObserved) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// VM returns one VM as observed now.
func (m *Manager) VM(id string) (*messages.VMObserved, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.observed[id]
	if !ok {
		return nil, vmNotFound(id)
	}
	return &o, nil
}

func vmNotFound(id string) error {
	return messages.Errorf(messages.KindNotFound, "vm_not_found", "vm %s is not on this node", id)
}

// Pause stops a running VM's vCPUs; Resume continues them. Both go through
// the VM's actor, after any operation already queued there.
func (m *Manager) Pause(ctx context.Context, id string) (*messages.VMObserved, error) {
	return m.sync(ctx, id, opPause)
}

// Resume continues a paused VM.
func (m *Manager) Resume(ctx context.Context, id string) (*messages.VMObserved, error) {
	return m.sync(ctx, id, opResume)
}

func (m *Manager) sync(ctx context.Context, id, op string) (*messages.VMObserved, error) {
	if _, err := m.VM(id); err != nil {
		return nil, err
	}
	reply := make(chan syncResult, 1)
	if err := m.send(id, runSync{op: op, reply: reply}); err != nil {
		return nil, err
	}
	select {
	case r := <-reply:
		return r.vm, r.err
	case <-ctx.Done():
		return nil, messages.Errorf(messages.KindUnavailable, "vm_busy",
			"vm %s did not get to %s in time: another operation is running", id, op)
	}
}

// Log returns up to tail bytes of the end of a VM's serial output.
func (m *Manager) Log(id string, tail int64) ([]byte, error) {
	m.mu.Lock()
	l, ok := m.logs[id]
	m.mu.Unlock()
	if !ok {
		return nil, vmNotFound(id)
	}
	return l.Tail(tail)
}

// NICs returns the NICs of every VM on this node that has any, by VM id:
// what the data plane makes taps for.
func (m *Manager) NICs() map[string][]messages.NICStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]messages.NICStatus, len(m.nics))
	for id, n := range m.nics {
		out[id] = slices.Clone(n)
	}
	return out
}

// setNICs records (or, with none, forgets) a VM's NICs for NICs.
func (m *Manager) setNICs(id string, nics []messages.NICStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(nics) == 0 {
		delete(m.nics, id)
		return
	}
	m.nics[id] = slices.Clone(nics)
}

// Images lists the cached base images, for heartbeats.
func (m *Manager) Images() []messages.CachedImage {
	list, err := m.cfg.Images.List()
	if err != nil {
		m.cfg.Log.Warn("list cached images", "err", err)
		return []messages.CachedImage{}
	}
	out := make([]messages.CachedImage, 0, len(list))
	for _, img := range list {
		out = append(out, messages.CachedImage{Pool: img.Pool, Name: img.Name, SizeBytes: img.SizeBytes, SHA256: img.SHA256})
	}
	return out
}

func (m *Manager) vmStateDir(id string) string { return filepath.Join(m.cfg.StateDir, id) }
func (m *Manager) vmRunDir(id string) string   { return filepath.Join(m.cfg.RunDir, id) }
func (m *Manager) serialLogPath(id string) string {
	return filepath.Join(m.vmStateDir(id), "serial.log")
}

func (m *Manager) binary(arch string) string {
	if b := m.cfg.Binaries[arch]; b != "" {
		return b
	}
	if arch == messages.ArchARM64 {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// hostArch is the only guest arch this node runs (no cross-arch emulation:
// placement sends a VM to a node of its arch).
var hostArch = runtime.GOARCH

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}
