package vmactor

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// closeManager closes m as the agent does and fails the test if an
// operation outlived it.
func closeManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Errorf("close manager: %v", err)
	}
}

// holdingNetwork is a data plane whose EnsureNICs is slow to give up: it
// returns only after its context is cancelled and the test lets it go, as
// a real one may still be removing half-made links.
type holdingNetwork struct {
	entered   chan struct{}
	cancelled chan struct{}
	release   chan struct{}
	once      sync.Once
	returned  atomic.Bool
}

func newHoldingNetwork() *holdingNetwork {
	return &holdingNetwork{entered: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
}

func (n *holdingNetwork) EnsureNICs(ctx context.Context, _ string, _ []messages.NICStatus) ([]string, error) {
	n.once.Do(func() { close(n.entered) })
	<-ctx.Done()
	close(n.cancelled)
	<-n.release
	n.returned.Store(true)
	return nil, ctx.Err()
}

func (n *holdingNetwork) ReleaseNICs(context.Context, string) error { return nil }

// leftGoroutines reports goroutines started since before was taken that
// still run (goleak retries a while, so ones on their way out pass). The
// HTTP client's keep-alive connection to the image server is the test's.
func leftGoroutines(before goleak.Option) error {
	return goleak.Find(before,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"))
}

// TestCloseWaitsForOperations: Close returns only once every goroutine the
// actors started has ended (an operation still cleaning up, the exit
// watcher of a QEMU that runs on), and says so when its context ends first.
func TestCloseWaitsForOperations(t *testing.T) {
	f := newFixture(t)
	netw := newHoldingNetwork()
	closeManager(t, f.m)
	f.cfg.Network = netw
	f.start()
	before := goleak.IgnoreCurrent()
	// A running VM: its exit watcher waits for a QEMU that outlives Close.
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, f.newVM("runs-on"))))

	vm := nicVM(f, "slow-net")
	_, _, err := f.m.Submit(vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	if err != nil {
		t.Fatal(err)
	}
	<-netw.entered
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = f.m.Close(short)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with an operation still running = %v, want it to wait and report the deadline", err)
	}
	if netw.returned.Load() {
		t.Fatal("the operation ended before Close returned")
	}
	<-netw.cancelled
	close(netw.release)
	closeManager(t, f.m)
	if err := leftGoroutines(before); err != nil {
		t.Fatalf("goroutines outlived Close: %v", err)
	}
	// The create got as far as starting, which Close cancelled: the VM is
	// made and stopped.
	if rec, err := loadRecord(f.m.vmStateDir(vm.ID)); err != nil || rec == nil || rec.Phase != messages.PhaseStopped {
		t.Errorf("record after the cancelled start: %+v %v", rec, err)
	}
}

// TestSupervisorRestartsThenStops: a panic in a VM actor restarts it (the
// work it held fails at once, the VM is re-adopted, QEMU untouched) up to
// maxRestarts times within restartWindow; one more stops it, and the next
// request gets a fresh actor.
func TestSupervisorRestartsThenStops(t *testing.T) {
	f := newFixture(t)
	var crash atomic.Bool
	crashOnPause := func(_, op string) {
		if op == opPause && crash.Load() {
			panic("test: actor crash")
		}
	}
	f.m.beforeOp.Store(&crashOnPause)
	vm := f.newVM("crashy")
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	mustSucceed(t, task)
	pid := task.VM.Pid
	actorOf := func() string {
		f.m.mu.Lock()
		defer f.m.mu.Unlock()
		if p, ok := f.m.actors[vm.ID]; ok {
			return p.String()
		}
		return ""
	}
	first := actorOf()
	pause := func() (*messages.VMObserved, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return f.m.Pause(ctx, vm.ID)
	}
	crash.Store(true)
	for i := 1; i <= maxRestarts; i++ {
		if _, err := pause(); errCode(err) != "agent_internal" {
			t.Fatalf("crash %d: pause = %v, want agent_internal at once", i, err)
		}
		if a := actorOf(); a != first {
			t.Fatalf("crash %d: actor %q, want %q restarted in place", i, a, first)
		}
	}
	crash.Store(false)
	// The restarted actor re-adopted the same QEMU and controls it.
	if o, err := pause(); err != nil || o.Phase != messages.PhasePaused || o.Pid != pid {
		t.Fatalf("pause after restarts: %+v %v (pid %d)", o, err, pid)
	}
	if _, err := f.m.Resume(context.Background(), vm.ID); err != nil {
		t.Fatal(err)
	}
	// Failures beyond the limit stop the actor; QEMU runs on.
	// The next crash is one too many: the actor stops. A task that reached
	// its mailbox meanwhile fails rather than stay pending for good.
	var queued *messages.AgentTask
	crashAndQueue := func(_, op string) {
		if op == opPause && crash.Load() {
			if queued == nil {
				var err error
				queued, _, err = f.m.Submit(vmReq(messages.NewID(), messages.TaskVMStart, vm))
				if err != nil {
					t.Errorf("submit behind the crash: %v", err)
				}
			}
			panic("test: actor crash")
		}
	}
	f.m.beforeOp.Store(&crashAndQueue)
	crash.Store(true)
	if _, err := pause(); errCode(err) != "agent_internal" {
		t.Fatalf("pause = %v, want agent_internal", err)
	}
	if !testutil.Until(10*time.Second, 10*time.Millisecond, func() bool { return actorOf() != first }) {
		t.Fatalf("actor still %s after %d crashes within %s", first, maxRestarts+1, restartWindow)
	}
	if queued == nil {
		t.Fatal("no task was queued behind the last crash")
	}
	if tk := f.wait(t, queued.ID); tk.State != messages.TaskFailed || tk.Error == nil || tk.Error.Code != "agent_internal" {
		t.Fatalf("task queued behind the last crash: %+v %+v", tk, tk.Error)
	}
	if !qemu.Alive(pid) {
		t.Fatal("a crashing actor ended its QEMU")
	}
	crash.Store(false)
	if o, err := pause(); err != nil || o.Phase != messages.PhasePaused || o.Pid != pid {
		t.Fatalf("pause on a fresh actor: %+v %v (pid %d)", o, err, pid)
	}
	req := vmReq(messages.NewID(), messages.TaskVMDelete, vm)
	req.Force = true
	mustSucceed(t, f.run(t, req))
}
