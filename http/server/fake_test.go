package server

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"log/slog"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// fakeCP is the far side of the boundary under test: just enough control
// plane to drive the middleware and the error table. The real one is tested
// end to end in e2e_etcd_test.go.
type fakeCP struct {
	mu      sync.Mutex
	creates int
	// err, when set, is what every call fails with.
	err      error
	readyErr error
	lastPage store.Page
	lastUpd  messages.UpdateVMRequest
	lastKind string
	lastForc bool
	// lastTimeout and lastTail are the last stop timeout and log tail asked.
	lastTimeout int
	lastTail    int64
	idem        *memIdempotency
	*fakeIdentity
	*fakeNodes
	*fakeNetworks
	*fakeStorage
	*fakeSettings
	fakeCluster
	fakeMetrics
	fakeEvents
	// consoles backs IssueConsoleToken and AttachConsole (console_test.go).
	consoles fakeConsoles
}

var _ ControlPlane = (*fakeCP)(nil)

func newFakeCP() *fakeCP {
	return &fakeCP{idem: newMemIdempotency(), fakeIdentity: newFakeIdentity(), fakeNodes: newFakeNodes(),
		fakeNetworks: newFakeNetworks(), fakeSettings: newFakeSettings(), fakeStorage: newFakeStorage(),
		consoles: fakeConsoles{used: map[string]bool{}}}
}

func (f *fakeCP) Ready(context.Context) error { return f.readyErr }

func (f *fakeCP) CreateVM(_ context.Context, owner string, req messages.CreateVMRequest) (*messages.VM, *messages.Task, error) {
	if req.Name == "panic" {
		panic("boom")
	}
	if f.err != nil {
		return nil, nil, f.err
	}
	if err := messages.ValidateName("name", req.Name); err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	f.creates++
	f.mu.Unlock()
	vm := fakeVM(req.Name, owner)
	return vm, fakeTask(messages.TaskVMCreate, vm), nil
}

func (f *fakeCP) GetVM(_ context.Context, owner, ref string) (*messages.VM, error) {
	if f.err != nil {
		return nil, f.err
	}
	return fakeVM(ref, owner), nil
}

func (f *fakeCP) ListVMs(_ context.Context, _ string, page store.Page) ([]*messages.VM, string, error) {
	f.mu.Lock()
	f.lastPage = page
	f.mu.Unlock()
	return nil, "", f.err
}

func (f *fakeCP) UpdateVM(_ context.Context, owner, ref string, req messages.UpdateVMRequest) (*messages.VM, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.mu.Lock()
	f.lastUpd = req
	f.mu.Unlock()
	return fakeVM(ref, owner), nil
}

func (f *fakeCP) RunVMTask(_ context.Context, owner, ref string, req messages.RequestVMTask) (*messages.VM, *messages.Task, error) {
	if f.err != nil {
		return nil, nil, f.err
	}
	f.mu.Lock()
	f.lastKind, f.lastForc, f.lastTimeout = req.Kind, req.Force, req.TimeoutSeconds
	f.mu.Unlock()
	vm := fakeVM(ref, owner)
	return vm, fakeTask(req.Kind, vm), nil
}

// PauseVM answers the VM paused on node-1.
func (f *fakeCP) PauseVM(_ context.Context, owner, ref string) (*messages.VM, error) {
	return f.powerOp(owner, ref, messages.PhasePaused)
}

// ResumeVM answers the VM running on node-1.
func (f *fakeCP) ResumeVM(_ context.Context, owner, ref string) (*messages.VM, error) {
	return f.powerOp(owner, ref, messages.PhaseRunning)
}

func (f *fakeCP) powerOp(owner, ref, phase string) (*messages.VM, error) {
	if f.err != nil {
		return nil, f.err
	}
	vm := fakeVM(ref, owner)
	now := time.Now().UTC()
	vm.Status = messages.VMStatus{Phase: phase, Node: "node-1", ObservedGeneration: 1, Pid: 4242,
		StartedAt: &now, ObservedAt: &now, Addresses: []string{"10.0.0.5"}}
	return vm, nil
}

// VMLogs answers fakeLog, cut to its last tail bytes.
func (f *fakeCP) VMLogs(_ context.Context, _, _ string, tail int64) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.mu.Lock()
	f.lastTail = tail
	f.mu.Unlock()
	out := []byte(fakeLog)
	if tail > 0 && int(tail) < len(out) {
		out = out[len(out)-int(tail):]
	}
	return out, nil
}

// fakeLog is the serial output the fake VMs print.
const fakeLog = "[    0.000000] Linux version 6.1.0\r\nDebian GNU/Linux 12 web-1 ttyS0\r\nweb-1 login: "

func (f *fakeCP) GetTask(_ context.Context, owner, id string) (*messages.Task, error) {
	if f.err != nil {
		return nil, f.err
	}
	t := fakeTask(messages.TaskVMCreate, fakeVM("x", owner))
	t.ID = id
	return t, nil
}

// WaitTask never sees the task finish: it waits for ctx like a pending task.
func (f *fakeCP) WaitTask(ctx context.Context, _, _ string) (*messages.Task, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeCP) ListTasks(_ context.Context, _ string, page store.Page) ([]*messages.Task, string, error) {
	f.mu.Lock()
	f.lastPage = page
	f.mu.Unlock()
	return nil, "", f.err
}

func (f *fakeCP) CancelTask(_ context.Context, owner, id string) (*messages.Task, error) {
	if f.err != nil {
		return nil, f.err
	}
	t := fakeTask(messages.TaskVMCreate, fakeVM("x", owner))
	t.ID, t.State = id, messages.TaskCancelled
	return t, nil
}

func (f *fakeCP) ReserveIdempotency(ctx context.Context, scope, key, hash string, expireAfter time.Duration) (store.Hold, *store.IdempotencyRecord, error) {
	return f.idem.ReserveIdempotency(ctx, scope, key, hash, expireAfter)
}

func fakeVM(name, owner string) *messages.VM {
	now := time.Now().UTC()
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian.qcow2"}}
	spec.Defaults()
	return &messages.VM{ID: messages.NewID(), Name: name, Owner: owner, Generation: 1, Spec: spec,
		Status: messages.VMStatus{Phase: messages.PhasePending}, CreatedAt: now, UpdatedAt: now, Revision: 7}
}

func fakeTask(kind string, vm *messages.VM) *messages.Task {
	now := time.Now().UTC()
	return &messages.Task{ID: messages.NewID(), Kind: kind, State: messages.TaskPending, Owner: vm.Owner,
		Target: messages.Target{Kind: "vm", ID: vm.ID, Name: vm.Name}, CreatedAt: now, UpdatedAt: now, Revision: 3}
}

// memIdempotency mirrors the store's reservation semantics in memory (a
// reserving replica never dies here; the etcd tests cover that).
type memIdempotency struct {
	mu   sync.Mutex
	recs map[string]store.IdempotencyRecord
	now  func() time.Time // the store's clock, which judges expiry
}

func newMemIdempotency() *memIdempotency {
	return &memIdempotency{recs: map[string]store.IdempotencyRecord{}, now: time.Now}
}

func (m *memIdempotency) ReserveIdempotency(_ context.Context, scope, key, hash string, expireAfter time.Duration) (store.Hold, *store.IdempotencyRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := scope + "\x00" + key
	if old, ok := m.recs[k]; ok && m.now().Sub(old.CreatedAt) <= expireAfter {
		return nil, &old, nil
	}
	m.recs[k] = store.IdempotencyRecord{RequestHash: hash, CreatedAt: m.now()}
	return memHold{m, k}, nil, nil
}

// memHold is one attempt's hold on a key of memIdempotency.
type memHold struct {
	m *memIdempotency
	k string
}

func (h memHold) Bind(ctx context.Context) context.Context { return ctx }

func (h memHold) Complete(_ context.Context, rec store.IdempotencyRecord) (bool, error) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	rec.Done = true
	h.m.recs[h.k] = rec
	return true, nil
}

func (h memHold) Abandon(context.Context) error {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	delete(h.m.recs, h.k)
	return nil
}

func (m *memIdempotency) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs)
}

// logBuffer collects log output from concurrent handlers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestServer(t *testing.T, cfg Config) (*Server, *fakeCP, *logBuffer) {
	t.Helper()
	cp := newFakeCP()
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(cfg, cp, log), cp, logs
}

var errLeaky = errors.New("dial tcp 10.0.0.7:2379: secret-internal-detail")
