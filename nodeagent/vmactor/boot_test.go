package vmactor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

func stepNames(steps []step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.name
	}
	return out
}

// createStepNames and startStepNames are the steps as the code lists them.
func createStepNames() []string {
	return stepNames((&making{e: &opEnv{m: &Manager{}}, rec: &record{}}).steps())
}

func startStepNames() []string {
	return stepNames((&launch{e: &opEnv{m: &Manager{}}}).steps())
}

// stepFixture is a fixture whose manager fails (or runs hook at) the step
// named in at, with real taps when run as root.
type stepFixture struct {
	*fixture
	netw *tapNetwork
	at   atomic.Value // string
	hook func(step string) error
}

func newStepFixture(t *testing.T) *stepFixture {
	sf := &stepFixture{fixture: newFixture(t)}
	sf.at.Store("")
	sf.hook = func(step string) error { return fmt.Errorf("injected failure at %s", step) }
	if os.Geteuid() == 0 {
		sf.netw = newTapNetwork(t)
		closeManager(t, sf.m)
		sf.cfg.Network = sf.netw
		sf.start()
	}
	sf.arm()
	return sf
}

// arm installs the failure on the current manager (after each start).
func (sf *stepFixture) arm() {
	sf.m.failStep = func(_, step string) error {
		if step == sf.at.Load().(string) {
			return sf.hook(step)
		}
		return nil
	}
}

func (sf *stepFixture) vm(name string) messages.AgentVM {
	if sf.netw != nil {
		return nicVM(sf.fixture, name)
	}
	return sf.newVM(name)
}

// processesOf lists the pids whose command line names vm id. Whatever it
// finds is a leak the caller reports; the test's cleanup kills it, so a
// failing run leaves no QEMU behind.
func processesOf(t *testing.T, id string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), id) {
			out = append(out, e.Name())
		}
	}
	if len(out) > 0 {
		t.Cleanup(func() { killNaming(out, id) })
	}
	return out
}

// killNaming kills those of pids whose command line still names id (a
// pid reused meanwhile is left alone).
func killNaming(pids []string, id string) {
	for _, p := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", p, "cmdline"))
		if err != nil || !strings.Contains(string(b), id) {
			continue
		}
		if pid, err := strconv.Atoi(p); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// leftOf lists what of vm id is on the host: files, dirs, taps, processes.
func (sf *stepFixture) leftOf(t *testing.T, id string) []string {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(sf.cfg.DiskDir, id+"*"))
	for _, d := range []string{filepath.Join(sf.cfg.StateDir, id), filepath.Join(sf.cfg.RunDir, id)} {
		if _, err := os.Stat(d); err == nil {
			left = append(left, d)
		}
	}
	if sf.netw != nil {
		sf.netw.mu.Lock()
		for _, tap := range sf.netw.taps[id] {
			if _, err := netlink.LinkByName(tap); err == nil {
				left = append(left, "tap "+tap)
			}
		}
		sf.netw.mu.Unlock()
	}
	if _, ok := sf.m.NICs()[id]; ok {
		left = append(left, "nics listed for the data plane")
	}
	for _, pid := range processesOf(t, id) {
		left = append(left, "process "+pid)
	}
	return left
}

// TestCreateFailsAtEachStep: a create failed at any of its steps names the
// step and leaves nothing (files, state, taps, data plane entry, process,
// goroutine); failed at a step of its start, it leaves a stopped VM and
// no QEMU, monitor or console.
func TestCreateFailsAtEachStep(t *testing.T) {
	sf := newStepFixture(t)
	check := func(t *testing.T, step string) (messages.AgentVM, *messages.AgentTask) {
		vm := sf.vm("fail-" + step)
		sf.at.Store(step)
		defer sf.at.Store("")
		task := sf.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
		if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "agent_internal" ||
			!strings.Contains(task.Error.Message, "step "+step+": injected failure") {
			t.Fatalf("create failed at %s: %+v %+v", step, task, task.Error)
		}
		return vm, task
	}
	for _, step := range createStepNames() {
		t.Run(step, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			vm, _ := check(t, step)
			if left := sf.leftOf(t, vm.ID); len(left) > 0 {
				t.Errorf("create failed at %s left %v", step, left)
			}
			if _, err := sf.m.VM(vm.ID); err == nil {
				t.Errorf("create failed at %s left the VM listed", step)
			}
			if err := leftGoroutines(before); err != nil {
				t.Errorf("create failed at %s left goroutines: %v", step, err)
			}
		})
	}
	for _, step := range startStepNames() {
		t.Run("start/"+step, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			vm, task := check(t, step)
			if task.VM == nil || task.VM.Phase != messages.PhaseStopped || task.VM.Pid != 0 {
				t.Errorf("VM after its start failed at %s: %+v", step, task.VM)
			}
			if pids := processesOf(t, vm.ID); len(pids) > 0 {
				t.Errorf("start failed at %s left processes %v", step, pids)
			}
			if err := leftGoroutines(before); err != nil {
				t.Errorf("start failed at %s left goroutines: %v", step, err)
			}
			req := vmReq(messages.NewID(), messages.TaskVMDelete, vm)
			mustSucceed(t, sf.run(t, req))
			if left := sf.leftOf(t, vm.ID); len(left) > 0 {
				t.Errorf("delete after a start failed at %s left %v", step, left)
			}
		})
	}
}

// TestRestartRollsBackInterruptedCreate: an agent that dies in a step of a
// create (the step's goroutine simply ends, as the process would) leaves
// the record at that step; the next agent rolls the create back to
// nothing, and the control plane's redelivered create then succeeds.
func TestRestartRollsBackInterruptedCreate(t *testing.T) {
	sf := newStepFixture(t)
	sf.hook = func(string) error {
		runtime.Goexit()
		return nil
	}
	for _, step := range createStepNames() {
		t.Run(step, func(t *testing.T) {
			vm := sf.vm("crash-" + step)
			vm.Spec.PowerState = messages.PowerStopped
			sf.at.Store(step)
			if _, _, err := sf.m.Submit(vmReq(messages.NewID(), messages.TaskVMCreate, vm)); err != nil {
				t.Fatal(err)
			}
			var rec *record
			testutil.Until(30*time.Second, 10*time.Millisecond, func() bool {
				rec, _ = loadRecord(sf.m.vmStateDir(vm.ID))
				return rec != nil && rec.Step == step
			})
			if rec == nil || rec.Phase != messages.PhaseCreating || rec.Step != step {
				t.Fatalf("record after dying at %s: %+v", step, rec)
			}
			// The dying step's goroutine may get to the hook only now.
			closeManager(t, sf.m)
			sf.at.Store("")
			sf.start()
			sf.arm()
			if !testutil.Until(30*time.Second, 10*time.Millisecond, func() bool { return len(sf.leftOf(t, vm.ID)) == 0 }) {
				t.Fatalf("after a restart, the create interrupted at %s left %v", step, sf.leftOf(t, vm.ID))
			}
			mustSucceed(t, sf.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))
			mustSucceed(t, sf.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
		})
	}
}

// recordV1 is the record as agents before create steps wrote it.
type recordV1 struct {
	ID         string               `json:"id"`
	Name       string               `json:"name"`
	Generation int64                `json:"generation"`
	Spec       messages.VMSpec      `json:"spec"`
	Phase      string               `json:"phase"`
	Pid        int                  `json:"pid,omitempty"`
	StartedAt  *time.Time           `json:"started_at,omitempty"`
	Message    string               `json:"message,omitempty"`
	Disk       string               `json:"disk"`
	Seed       string               `json:"seed,omitempty"`
	Base       string               `json:"base,omitempty"`
	BaseFormat string               `json:"base_format,omitempty"`
	NICs       []messages.NICStatus `json:"nics,omitempty"`
	CreatedAt  time.Time            `json:"created_at"`
}

func writeV1(t *testing.T, dir string, rec *record) {
	t.Helper()
	old := recordV1{ID: rec.ID, Name: rec.Name, Generation: rec.Generation, Spec: rec.Spec, Phase: rec.Phase, Pid: rec.Pid,
		StartedAt: rec.StartedAt, Message: rec.Message, Disk: rec.Disk, Seed: rec.Seed, Base: rec.Base,
		BaseFormat: rec.BaseFormat, NICs: rec.NICs, CreatedAt: rec.CreatedAt}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, recordFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOlderAgentsRecords: an agent upgraded over an older agent's state
// adopts its running QEMU, and rolls back a create the older agent died in
// (its record names no step: every step is undone).
func TestOlderAgentsRecords(t *testing.T) {
	sf := newStepFixture(t)
	running := sf.vm("old-running")
	task := sf.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, running))
	mustSucceed(t, task)
	pid := task.VM.Pid
	creating := sf.vm("old-creating")
	creating.Spec.PowerState = messages.PowerStopped
	mustSucceed(t, sf.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, creating)))
	closeManager(t, sf.m)

	for _, id := range []string{running.ID, creating.ID} {
		rec, err := loadRecord(sf.m.vmStateDir(id))
		if err != nil || rec == nil {
			t.Fatalf("record of %s: %+v %v", id, rec, err)
		}
		if id == creating.ID {
			rec.Phase = messages.PhaseCreating
		}
		writeV1(t, sf.m.vmStateDir(id), rec)
	}
	sf.start()
	sf.arm()
	var o *messages.VMObserved
	testutil.Until(30*time.Second, 10*time.Millisecond, func() bool {
		o, _ = sf.m.VM(running.ID)
		return o != nil && o.Pid != 0
	})
	if o == nil || o.Pid != pid || o.Phase != messages.PhaseRunning {
		t.Fatalf("after the upgrade: %+v (pid was %d)", o, pid)
	}
	if !testutil.Until(30*time.Second, 10*time.Millisecond, func() bool { return len(sf.leftOf(t, creating.ID)) == 0 }) {
		t.Fatalf("the older agent's interrupted create left %v", sf.leftOf(t, creating.ID))
	}
	if o, err := sf.m.Pause(t.Context(), running.ID); err != nil || o.Phase != messages.PhasePaused {
		t.Fatalf("pause after the upgrade: %+v %v", o, err)
	}
	req := vmReq(messages.NewID(), messages.TaskVMDelete, running)
	req.Force = true
	mustSucceed(t, sf.run(t, req))
}
