package vmactor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// These tests drive the manager with real QEMU processes (TCG, no guest OS:
// the firmware finds nothing to boot and QEMU simply runs), a real image
// cache fed by a loopback HTTP server, and real seed ISOs.

func needQEMU(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("OTHERIX_REQUIRE_QEMU") == "1" {
				t.Fatalf("%s is required (OTHERIX_REQUIRE_QEMU=1): %v", bin, err)
			}
			t.Skipf("%s not installed: %v (scripts/install-deps.sh installs it)", bin, err)
		}
	}
}

type fixture struct {
	t       *testing.T // the top-level test: managers live as long as it
	m       *Manager
	cfg     Config
	url     string
	sha     string
	baseDir string
}

// newFixture serves a small qcow2 base image on loopback and starts a
// manager over fresh dirs.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	needQEMU(t)
	// Short paths: QEMU's sockets live under RunDir.
	base, err := os.MkdirTemp("", "vma")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	img := filepath.Join(base, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	body, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureServing(t, base, body)
}

// newFixtureServing serves body as the base image and starts a manager
// over fresh dirs under base.
func newFixtureServing(t *testing.T, base string, body []byte) *fixture {
	t.Helper()
	sum := sha256.Sum256(body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/images/base.qcow2" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	// The image server listens on loopback, which downloads may not reach
	// unless allowed, as an agent would with --image-allow.
	cache, err := images.New("default", filepath.Join(base, "pool", "images"),
		images.Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	cfg := Config{StateDir: filepath.Join(base, "state"), RunDir: filepath.Join(base, "r"),
		DiskDir: filepath.Join(base, "pool", "vms"), Images: cache, Accel: "tcg", StopTimeout: time.Minute}
	// As the agent does by default: QEMU as the unprivileged user, sandboxed.
	if os.Geteuid() == 0 {
		if u, err := qemu.LookupUser(qemu.DefaultUser); err == nil {
			cfg.QEMUUser, cfg.Sandbox = u, true
		}
	}
	f := &fixture{t: t, cfg: cfg, url: srv.URL + "/images/base.qcow2", sha: hex.EncodeToString(sum[:]), baseDir: base}
	f.start()
	return f
}

// start starts (or restarts, after Close) the manager, as an agent does.
func (f *fixture) start() {
	t := f.t
	t.Helper()
	m, err := New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Recover(); err != nil {
		t.Fatal(err)
	}
	f.m = m
	t.Cleanup(func() {
		// Tests end their VMs; anything left is killed by pid so no QEMU
		// outlives the test.
		for _, vm := range m.VMs() {
			if vm.Pid > 0 {
				_ = syscall.Kill(vm.Pid, syscall.SIGKILL)
			}
		}
		closeManager(t, m)
	})
}

func vmReq(id, kind string, vm messages.AgentVM) messages.AgentTaskRequest {
	return messages.AgentTaskRequest{ID: id, Kind: kind, VM: vm}
}

// run submits a task and waits for it to end.
func (f *fixture) run(t *testing.T, req messages.AgentTaskRequest) *messages.AgentTask {
	t.Helper()
	task, _, err := f.m.Submit(req)
	if err != nil {
		t.Fatalf("submit %s: %v", req.Kind, err)
	}
	return f.wait(t, task.ID)
}

func (f *fixture) wait(t *testing.T, id string) *messages.AgentTask {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		task, err := f.m.Task(context.Background(), id, 10*time.Second)
		if err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		if messages.Terminal(task.State) {
			return task
		}
	}
	t.Fatalf("task %s did not end", id)
	return nil
}

func (f *fixture) newVM(name string) messages.AgentVM {
	spec := messages.VMSpec{Image: messages.ImageSource{URL: f.url, SHA256: f.sha}, CPUs: 1, MemoryMiB: 128, DiskGiB: 1,
		UserData: "#!/bin/sh\necho hi\n"}
	spec.Defaults()
	return messages.AgentVM{ID: messages.NewID(), Name: name, Generation: 1, Spec: spec}
}

// TestMain makes the test binary a subreaper like the agent, so the QEMU
// daemons it starts are its children and are reaped at once.
func TestMain(m *testing.M) {
	if err := qemu.SetChildSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func mustSucceed(t *testing.T, task *messages.AgentTask) {
	t.Helper()
	if task.State != messages.TaskSuccess {
		t.Fatalf("%s: state %s, error %+v", task.Kind, task.State, task.Error)
	}
}

func TestLifecycleWithRealQEMU(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("web-1")
	createID := messages.NewID()
	task := f.run(t, vmReq(createID, messages.TaskVMCreate, vm))
	mustSucceed(t, task)
	if task.VM == nil || task.VM.Phase != messages.PhaseRunning || !qemu.Alive(task.VM.Pid) {
		t.Fatalf("after create: %+v", task.VM)
	}
	pid := task.VM.Pid
	for _, p := range []string{filepath.Join(f.cfg.DiskDir, vm.ID+".qcow2"), filepath.Join(f.cfg.DiskDir, vm.ID+"-seed.iso")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("create left no %s: %v", p, err)
		}
	}
	// The VM disk is backed by the cached image and sized as asked.
	out, err := exec.Command("qemu-img", "info", "-U", filepath.Join(f.cfg.DiskDir, vm.ID+".qcow2")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file:") || !strings.Contains(string(out), "virtual size: 1 GiB") {
		t.Fatalf("vm disk: %v\n%s", err, out)
	}

	t.Run("the same task id answers the same task", func(t *testing.T) {
		again, created, err := f.m.Submit(vmReq(createID, messages.TaskVMCreate, vm))
		if err != nil || created || again.State != messages.TaskSuccess {
			t.Fatalf("resubmit: created=%v task=%+v err=%v", created, again, err)
		}
		_, _, err = f.m.Submit(vmReq(createID, messages.TaskVMDelete, vm))
		var e *messages.Error
		if !errors.As(err, &e) || e.Code != "task_id_conflict" {
			t.Fatalf("same id, other kind: %v", err)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		ctx := context.Background()
		o, err := f.m.Pause(ctx, vm.ID)
		if err != nil || o.Phase != messages.PhasePaused {
			t.Fatalf("pause: %+v %v", o, err)
		}
		o, err = f.m.Resume(ctx, vm.ID)
		if err != nil || o.Phase != messages.PhaseRunning {
			t.Fatalf("resume: %+v %v", o, err)
		}
	})

	t.Run("graceful stop that the guest ignores times out and keeps the VM", func(t *testing.T) {
		// No guest OS answers the ACPI button here.
		req := vmReq(messages.NewID(), messages.TaskVMStop, vm)
		req.TimeoutSeconds = 1
		task := f.run(t, req)
		if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "stop_timeout" {
			t.Fatalf("stop: %+v", task)
		}
		if !qemu.Alive(pid) {
			t.Fatal("a graceful stop killed QEMU")
		}
	})

	t.Run("an agent restart re-adopts the running QEMU", func(t *testing.T) {
		closeManager(t, f.m)
		if !qemu.Alive(pid) {
			t.Fatal("closing the manager stopped QEMU")
		}
		f.start()
		var o *messages.VMObserved
		var err error
		// The actor re-attaches asynchronously; poll its publication.
		testutil.Until(30*time.Second, 20*time.Millisecond, func() bool {
			o, err = f.m.VM(vm.ID)
			return err == nil && o.Pid != 0
		})
		if err != nil || o.Pid != pid || o.Phase != messages.PhaseRunning {
			t.Fatalf("after restart: %+v %v (pid was %d)", o, err, pid)
		}
		// The re-adopted VM is fully controllable.
		if o, err := f.m.Pause(context.Background(), vm.ID); err != nil || o.Phase != messages.PhasePaused {
			t.Fatalf("pause after re-adoption: %+v %v", o, err)
		}
	})

	t.Run("delete of a running VM needs force", func(t *testing.T) {
		task := f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm))
		if task.State != messages.TaskFailed || task.Error.Code != "vm_running" {
			t.Fatalf("delete without force: %+v", task)
		}
	})

	t.Run("poweroff, start, forced delete", func(t *testing.T) {
		task := f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm))
		mustSucceed(t, task)
		if task.VM.Phase != messages.PhaseStopped || qemu.Alive(pid) {
			t.Fatalf("after poweroff: %+v, pid %d alive=%v", task.VM, pid, qemu.Alive(pid))
		}
		task = f.run(t, vmReq(messages.NewID(), messages.TaskVMStart, vm))
		mustSucceed(t, task)
		if task.VM.Phase != messages.PhaseRunning || !qemu.Alive(task.VM.Pid) || task.VM.Pid == pid {
			t.Fatalf("after start: %+v", task.VM)
		}
		newPid := task.VM.Pid
		req := vmReq(messages.NewID(), messages.TaskVMDelete, vm)
		req.Force = true
		mustSucceed(t, f.run(t, req))
		if qemu.Alive(newPid) {
			t.Fatal("forced delete left QEMU running")
		}
		if _, err := f.m.VM(vm.ID); err == nil {
			t.Fatal("deleted VM still listed")
		}
		for _, p := range []string{filepath.Join(f.cfg.DiskDir, vm.ID+".qcow2"), filepath.Join(f.cfg.DiskDir, vm.ID+"-seed.iso"),
			filepath.Join(f.cfg.StateDir, vm.ID), filepath.Join(f.cfg.RunDir, vm.ID)} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("delete left %s (%v)", p, err)
			}
		}
	})
}

func TestCreateWithWrongChecksumLeavesNothing(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("bad-sum")
	vm.Spec.Image.SHA256 = strings.Repeat("0", 64)
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "image_checksum_mismatch" {
		t.Fatalf("create: %+v", task)
	}
	if _, err := f.m.VM(vm.ID); err == nil {
		t.Fatal("failed create left a VM")
	}
	for _, dir := range []string{f.cfg.DiskDir, f.cfg.StateDir} {
		entries, _ := os.ReadDir(dir)
		if len(entries) != 0 {
			t.Errorf("failed create left %d entries in %s", len(entries), dir)
		}
	}
	// Deleting what does not exist here succeeds: the control plane may
	// retry a delete after the VM is gone.
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

func TestCreateStoppedThenStartOnUnknownVM(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("cold")
	vm.Spec.PowerState = messages.PowerStopped
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	mustSucceed(t, task)
	if task.VM.Phase != messages.PhaseStopped || task.VM.Pid != 0 {
		t.Fatalf("stopped create: %+v", task.VM)
	}
	other := f.newVM("ghost")
	task = f.run(t, vmReq(messages.NewID(), messages.TaskVMStart, other))
	if task.State != messages.TaskFailed || task.Error.Code != "vm_not_found" {
		t.Fatalf("start of unknown vm: %+v", task)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

// TestStartRefusesDiskOnUnsafeBase: a VM whose disk sits on a base with an
// external data file (as a cache before normalisation could have left) is
// not started: QEMU would open the named host file as root.
func TestStartRefusesDiskOnUnsafeBase(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("legacy")
	vm.Spec.PowerState = messages.PowerStopped
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))

	// Replace the disk with one backed by a legacy-style base.
	dir := t.TempDir()
	secret, base := filepath.Join(dir, "host-secret"), filepath.Join(dir, "legacy.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", "-o", "data_file=" + secret + ",data_file_raw=on", base, "64M"},
		{"create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", filepath.Join(dir, "disk.qcow2"), "1G"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	disk := filepath.Join(f.cfg.DiskDir, vm.ID+".qcow2")
	if err := os.Rename(filepath.Join(dir, "disk.qcow2"), disk); err != nil {
		t.Fatal(err)
	}
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMStart, vm))
	if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "image_external_reference" {
		t.Fatalf("start on an unsafe base: %+v", task)
	}
	if task.VM != nil && task.VM.Pid != 0 {
		t.Errorf("QEMU was started: %+v", task.VM)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}

// TestNewRefusesRelativeDirs: VM records keep paths built from these dirs
// and QEMU is handed them; a relative dir (make dev's .dev) once reached
// QEMU's spec check only at the first create.
func TestNewRefusesRelativeDirs(t *testing.T) {
	cache, err := images.New("default", filepath.Join(t.TempDir(), "images"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	abs := t.TempDir()
	t.Chdir(t.TempDir())
	for _, cfg := range []Config{
		{StateDir: ".dev/agent/vms", RunDir: abs, DiskDir: abs},
		{StateDir: abs, RunDir: ".dev/agent/run", DiskDir: abs},
		{StateDir: abs, RunDir: abs, DiskDir: "pools/default/vms"},
	} {
		cfg.Images = cache
		m, err := New(cfg)
		if err == nil {
			closeManager(t, m)
			t.Fatalf("New(%+v) accepted a relative dir", cfg)
		}
		if !strings.Contains(err.Error(), "want an absolute path") {
			t.Fatalf("New: %v, want 'want an absolute path'", err)
		}
	}
}

// TestStartRefusesUnsafeRecordedBase: QEMU opens the base the record
// names, not the one in the disk's header; a recorded base naming a host
// file is refused even when the header names a clean one.
func TestStartRefusesUnsafeRecordedBase(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("recorded")
	vm.Spec.PowerState = messages.PowerStopped
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))

	bases, err := filepath.Glob(filepath.Join(f.baseDir, "pool", "images", "bases", "*.qcow2"))
	if err != nil || len(bases) != 1 {
		t.Fatalf("cached bases: %v, %v", bases, err)
	}
	dir := t.TempDir()
	secret, unsafe, clean := filepath.Join(dir, "host-secret"), filepath.Join(dir, "legacy.qcow2"), filepath.Join(dir, "clean.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", "-o", "data_file=" + secret + ",data_file_raw=on", unsafe, "64M"},
		{"create", "-q", "-f", "qcow2", clean, "64M"},
		{"create", "-q", "-f", "qcow2", "-b", clean, "-F", "qcow2", filepath.Join(dir, "disk.qcow2"), "1G"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	// The recorded base now names the secret; the disk's header names a
	// clean base elsewhere.
	if err := os.Rename(unsafe, bases[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "disk.qcow2"), filepath.Join(f.cfg.DiskDir, vm.ID+".qcow2")); err != nil {
		t.Fatal(err)
	}
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMStart, vm))
	if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "image_external_reference" {
		t.Fatalf("start on an unsafe recorded base: %+v", task)
	}
	if task.VM != nil && task.VM.Pid != 0 {
		t.Errorf("QEMU was started: %+v", task.VM)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}
