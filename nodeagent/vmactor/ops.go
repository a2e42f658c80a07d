package vmactor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/cloudinit"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/qcow2"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// Bounds of the steps that are not the guest's business.
const (
	// qmpTimeout bounds connecting to QMP and one command.
	qmpTimeout = 10 * time.Second
	// quitTimeout is how long poweroff waits for QEMU to end after quit,
	// and again after SIGKILL.
	quitTimeout = 10 * time.Second
	// downloadShare is the part of a create's progress the image download takes.
	downloadShare = 80
)

// opEnv runs one queued item against a copy of the VM's state.
type opEnv struct {
	m  *Manager
	id string
	w  *work

	lastProgress time.Time
}

func (e *opEnv) run(ctx context.Context, st vmState) (vmState, error) {
	switch e.w.name() {
	case messages.TaskVMCreate:
		return e.create(ctx, st)
	case messages.TaskVMStart:
		if st.rec == nil {
			return st, vmNotFound(e.id)
		}
		return e.start(ctx, st)
	case messages.TaskVMStop:
		if st.rec == nil {
			return st, vmNotFound(e.id)
		}
		return e.stop(ctx, st, e.timeout())
	case messages.TaskVMPoweroff:
		if st.rec == nil {
			return st, vmNotFound(e.id)
		}
		return e.poweroff(ctx, st)
	case messages.TaskVMReboot:
		return e.reboot(ctx, st)
	case messages.TaskVMDelete:
		return e.delete(ctx, st)
	case opPause:
		return e.pause(ctx, st)
	case opResume:
		return e.resume(ctx, st)
	case opObserveExit:
		if st.rec == nil {
			return st, nil
		}
		return e.observeExit(st)
	case opEvent:
		return e.observeEvent(ctx, st)
	}
	return st, messages.Errorf(messages.KindInvalid, "unknown_operation", "unknown operation %q", e.w.name())
}

func (e *opEnv) timeout() time.Duration {
	if s := e.w.req.TimeoutSeconds; s > 0 {
		return time.Duration(s) * time.Second
	}
	return e.m.cfg.StopTimeout
}

func (e *opEnv) progress(pct int, msg string) {
	if e.w.taskID == "" {
		return
	}
	e.m.update(e.w.taskID, func(t *messages.AgentTask) { t.Progress, t.Message = pct, msg })
}

// create materialises the VM on this node (base image, VM disk, seed)
// and starts it if it should run. A repeated create of a VM that exists
// converges instead of failing, so a job redelivered after an agent restart
// finishes the work.
func (e *opEnv) create(ctx context.Context, st vmState) (vmState, error) {
	vm := e.w.req.VM
	spec := vm.Spec
	spec.Defaults()
	if st.rec != nil {
		if st.rec.Phase == messages.PhaseFailed || st.rec.Disk == "" {
			return st, messages.Errorf(messages.KindConflict, "vm_broken", "vm %s exists on this node in a failed state; delete it", e.id)
		}
		if spec.PowerState == messages.PowerRunning && !alive(st) {
			return e.start(ctx, st)
		}
		return st, nil
	}
	if spec.Arch != hostArch {
		return st, messages.Errorf(messages.KindInvalid, "arch_mismatch", "this node runs %s guests, not %s", hostArch, spec.Arch)
	}
	if len(vm.NICs) > 0 && e.m.cfg.Network == nil {
		return st, errNoDataPlane(e.id)
	}
	netcfg, err := cloudinit.NetworkConfig(vm.NICs)
	if err != nil {
		return st, messages.Errorf(messages.KindInvalid, "seed_failed", "%v", err)
	}
	now := e.m.cfg.Now().UTC()
	dir := e.m.vmStateDir(e.id)
	rec := &record{ID: e.id, Name: vm.Name, Generation: vm.Generation, Spec: spec, Phase: messages.PhaseCreating,
		Disk: filepath.Join(e.m.cfg.DiskDir, e.id+".qcow2"), Seed: filepath.Join(e.m.cfg.DiskDir, e.id+"-seed.iso"),
		NICs: vm.NICs, CreatedAt: now}
	c := &making{e: e, rec: rec, netcfg: netcfg}
	// Each step is recorded before it begins: an agent that dies half-way
	// rolls the create back when it loads the record again (load).
	run := e.runner(func(step string) error {
		rec.Step = step
		return rec.save(dir)
	})
	// Nothing half-made stays behind: a failed create leaves no disk, seed,
	// state or tap, and the control plane's VM is simply not on this node.
	if err := run.run(ctx, c.steps()); err != nil {
		return vmState{}, err
	}
	st = vmState{rec: rec, log: c.log}
	if spec.PowerState != messages.PowerRunning {
		return st, nil
	}
	e.progress(downloadShare+10, "starting")
	return e.start(ctx, st)
}

// downloadProgress maps the image download onto the task's first 80 %, at
// most a few updates a second.
func (e *opEnv) downloadProgress(done, total int64) {
	now := time.Now()
	if now.Sub(e.lastProgress) < 250*time.Millisecond && done != total {
		return
	}
	e.lastProgress = now
	if total <= 0 {
		e.progress(1, fmt.Sprintf("downloading image: %d MiB", done>>20))
		return
	}
	if done == total {
		// Checks and the conversion into a standalone qcow2 follow: about
		// the time of one qemu-img convert.
		e.progress(downloadShare, fmt.Sprintf("downloaded %d MiB; checking and normalising the image", total>>20))
		return
	}
	e.progress(1+int(done*(downloadShare-1)/total), fmt.Sprintf("downloading image: %d of %d MiB", done>>20, total>>20))
}

// start launches QEMU paused, attaches the serial log, then lets the guest
// run, so not a byte of boot output is missed.
func (e *opEnv) start(ctx context.Context, st vmState) (vmState, error) {
	if alive(st) {
		return st, nil
	}
	l := &launch{e: e, rec: *st.rec, log: st.log}
	if err := e.runner(nil).run(ctx, l.steps()); err != nil {
		return st, err
	}
	rec := l.rec
	now := e.m.cfg.Now().UTC()
	rec.Phase, rec.Pid, rec.StartedAt, rec.Message, rec.Reason = messages.PhaseRunning, l.proc.Pid, &now, "", ""
	next := vmState{rec: &rec, proc: l.proc, mon: l.mon, log: l.log, hub: l.hub}
	if err := rec.save(e.m.vmStateDir(e.id)); err != nil {
		// QEMU runs; the record will be fixed by the next change. Losing it
		// now would orphan the process, so the task still fails loudly.
		return next, err
	}
	e.m.cfg.Log.Info("vm started", "vm", e.id, "pid", l.proc.Pid, "accel", e.m.cfg.Accel)
	return next, nil
}

// base returns the disk's backing image. Records written before the agent
// kept it have only the VM disk's header to go by, which is trusted only
// where it points into this pool's image cache with a format named.
func (e *opEnv) base(rec *record) (string, string, error) {
	if rec.Base != "" {
		return rec.Base, rec.BaseFormat, nil
	}
	h, err := qcow2.Read(rec.Disk)
	if err != nil {
		return "", "", messages.Errorf(messages.KindConflict, "vm_disk_invalid", "the disk of vm %s: %v", e.id, err)
	}
	if h.BackingFile == "" {
		return "", "", nil
	}
	images := filepath.Join(filepath.Dir(e.m.cfg.DiskDir), "images") + string(filepath.Separator)
	clean := filepath.Clean(h.BackingFile)
	if clean != h.BackingFile || !strings.HasPrefix(clean, images) || (h.BackingFormat != "qcow2" && h.BackingFormat != "raw") {
		return "", "", messages.Errorf(messages.KindConflict, "vm_disk_invalid",
			"the disk of vm %s names backing file %q (%q) outside the image cache %s", e.id, h.BackingFile, h.BackingFormat, images)
	}
	return clean, h.BackingFormat, nil
}

// stop presses the ACPI power button and waits for the guest to power off.
// It never forces anything: on timeout the VM keeps running and the task
// fails, and poweroff is the explicit way to force it.
func (e *opEnv) stop(ctx context.Context, st vmState, timeout time.Duration) (vmState, error) {
	if !alive(st) {
		return e.stopped(st, "")
	}
	err := e.qmp(ctx, &st, func(c context.Context, mon *qemu.Monitor) error {
		// A paused guest cannot see the power button.
		if s, err := mon.Status(c); err == nil && !s.Running && s.Status != "shutdown" {
			if err := mon.Cont(c); err != nil {
				return err
			}
		}
		return mon.SystemPowerdown(c)
	})
	if err != nil && alive(st) {
		return st, err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-st.proc.Exited():
		return e.stopped(st, "")
	case <-timer.C:
		return st, messages.Errorf(messages.KindConflict, "stop_timeout",
			"the guest did not power off within %s of the ACPI power button; it keeps running (poweroff forces it off)", timeout)
	case <-ctx.Done():
		return st, ctx.Err()
	}
}

// poweroff ends QEMU at once: QMP quit, and SIGKILL if QEMU does not go.
func (e *opEnv) poweroff(ctx context.Context, st vmState) (vmState, error) {
	if !alive(st) {
		return e.stopped(st, "")
	}
	// QEMU may close the socket before answering; the exit is what counts.
	_ = e.qmp(ctx, &st, func(c context.Context, mon *qemu.Monitor) error { return mon.Quit(c) })
	if !waitExit(st.proc, quitTimeout) {
		e.m.cfg.Log.Warn("qemu did not quit; killing it", "vm", e.id, "pid", st.proc.Pid)
		_ = st.proc.Kill()
		if !waitExit(st.proc, quitTimeout) {
			return st, messages.Errorf(messages.KindInternal, "poweroff_failed", "QEMU pid %d survived SIGKILL", st.proc.Pid)
		}
	}
	return e.stopped(st, "")
}

// reboot is graceful by default (power off through ACPI, then start again
// with the same disks); force resets the machine at once.
func (e *opEnv) reboot(ctx context.Context, st vmState) (vmState, error) {
	if st.rec == nil {
		return st, vmNotFound(e.id)
	}
	if !alive(st) {
		return e.start(ctx, st)
	}
	if e.w.req.Force {
		err := e.qmp(ctx, &st, func(c context.Context, mon *qemu.Monitor) error { return mon.SystemReset(c) })
		return st, err
	}
	next, err := e.stop(ctx, st, e.timeout())
	if err != nil {
		return next, err
	}
	return e.start(ctx, next)
}

// delete removes the VM from this node: disk, seed, state and run dir. A
// running VM is refused unless forced, which powers it off first.
func (e *opEnv) delete(ctx context.Context, st vmState) (vmState, error) {
	if st.rec == nil {
		return st, nil
	}
	if alive(st) {
		if !e.w.req.Force {
			return st, messages.Errorf(messages.KindConflict, "vm_running", "vm %s is running; stop it first or delete with force", e.id)
		}
		next, err := e.poweroff(ctx, st)
		if err != nil {
			return next, err
		}
		st = next
	}
	if st.log != nil {
		_ = st.log.Close()
	}
	if err := removeAll(st.rec.Disk, st.rec.Seed, e.m.vmRunDir(e.id), e.m.vmStateDir(e.id)); err != nil {
		return vmState{rec: st.rec}, err
	}
	e.releaseNICs(st.rec)
	e.m.cfg.Log.Info("vm deleted", "vm", e.id)
	return vmState{}, nil
}

// createTaps has the data plane make the VM's taps, attached to their
// networks' bridges, and returns them as QEMU NICs. Every start does it
// again: it is idempotent, and the node may have rebooted since.
func (e *opEnv) createTaps(ctx context.Context, rec *record) ([]qemu.NIC, error) {
	if len(rec.NICs) == 0 {
		return nil, nil
	}
	if e.m.cfg.Network == nil {
		return nil, errNoDataPlane(e.id)
	}
	// Recorded before the taps are made, so that no reconcile drops them.
	e.m.setNICs(e.id, rec.NICs)
	taps, err := e.m.cfg.Network.EnsureNICs(ctx, e.id, rec.NICs)
	if err != nil {
		var me *messages.Error
		if errors.As(err, &me) {
			return nil, err
		}
		return nil, messages.Errorf(messages.KindUnavailable, "network_unavailable", "set up the network of vm %s: %v", e.id, err)
	}
	if len(taps) != len(rec.NICs) {
		return nil, messages.Errorf(messages.KindInternal, "network_unavailable", "the data plane made %d taps for %d nics", len(taps), len(rec.NICs))
	}
	rec.Taps = slices.Clone(taps)
	out := make([]qemu.NIC, len(taps))
	for i, tap := range taps {
		out[i] = qemu.NIC{Tap: tap, MAC: rec.NICs[i].MAC}
	}
	return out, nil
}

// releaseNICs drops a VM's NICs from the data plane (its taps go). A
// failure is logged: the next reconcile converges anyway.
func (e *opEnv) releaseNICs(rec *record) {
	if rec == nil || len(rec.NICs) == 0 {
		return
	}
	e.m.setNICs(e.id, nil)
	if e.m.cfg.Network == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.m.cfg.Network.ReleaseNICs(ctx, e.id); err != nil {
		e.m.cfg.Log.Warn("remove vm taps", "vm", e.id, "err", err)
	}
}

// errNoDataPlane fails a VM with NICs on a node without a data plane.
func errNoDataPlane(id string) error {
	return messages.Errorf(messages.KindUnavailable, "network_unavailable",
		"vm %s has network interfaces but this node runs no network data plane (otherix-agent serve --data-plane off, or not root)", id)
}

func (e *opEnv) pause(ctx context.Context, st vmState) (vmState, error) {
	return e.setRunning(ctx, st, false)
}

func (e *opEnv) resume(ctx context.Context, st vmState) (vmState, error) {
	return e.setRunning(ctx, st, true)
}

// setRunning is QMP cont or stop; the phase follows what QEMU then reports.
func (e *opEnv) setRunning(ctx context.Context, st vmState, run bool) (vmState, error) {
	if st.rec == nil {
		return st, vmNotFound(e.id)
	}
	if !alive(st) {
		return st, messages.Errorf(messages.KindConflict, "vm_not_running", "vm %s is not running", e.id)
	}
	var s qemu.Status
	err := e.qmp(ctx, &st, func(c context.Context, mon *qemu.Monitor) error {
		change := mon.Stop
		if run {
			change = mon.Cont
		}
		if err := change(c); err != nil {
			return err
		}
		var err error
		s, err = mon.Status(c)
		return err
	})
	if err != nil {
		return st, err
	}
	rec := *st.rec
	rec.Phase = phaseOf(s)
	if s.Status != "io-error" {
		rec.Reason, rec.Message = "", "" // the user's operation, not QEMU, set the phase
	}
	st.rec = &rec
	return st, rec.save(e.m.vmStateDir(e.id))
}

// stopped records that QEMU is gone.
func (e *opEnv) stopped(st vmState, msg string) (vmState, error) {
	if st.mon != nil {
		_ = st.mon.Close()
	}
	if st.proc != nil {
		_ = st.proc.Close()
	}
	if st.hub != nil {
		// Usually already over: QEMU's exit ends the serial line.
		st.hub.Close(messages.ConsoleVMStopped, "the VM stopped")
	}
	rec := *st.rec
	rec.Phase, rec.Pid, rec.StartedAt, rec.Message, rec.Reason = messages.PhaseStopped, 0, nil, msg, ""
	next := vmState{rec: &rec, log: st.log}
	return next, rec.save(e.m.vmStateDir(e.id))
}

// qmp runs f on the VM's QMP connection under one command deadline,
// dialling again (and keeping the connection in st) if an earlier
// re-adoption could not.
func (e *opEnv) qmp(ctx context.Context, st *vmState, f func(context.Context, *qemu.Monitor) error) error {
	c, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	if st.mon == nil {
		mon, err := qemu.Dial(c, qemu.QMPPath(e.m.vmRunDir(e.id)))
		if err != nil {
			return err
		}
		st.mon = mon
	}
	return f(c, st.mon)
}

func alive(st vmState) bool { return st.proc != nil && !isClosed(st.proc.Exited()) }

// waitExit waits up to d for p to end.
func waitExit(p *qemu.Process, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Exited():
		return true
	case <-t.C:
		return false
	}
}

// imageCode is the stable code of an image cache error, if err is one.
func imageCode(err error) string {
	var ie *images.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}
