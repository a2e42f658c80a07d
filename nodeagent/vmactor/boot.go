package vmactor

import (
	"context"
	"os"
	"path/filepath"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/cloudinit"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// Names of the steps of a create and a start, as errors and records name
// them.
const (
	stepWriteState    = "write-state"
	stepFetchImage    = "fetch-image"
	stepCreateDisk    = "create-disk"
	stepBuildSeed     = "build-seed"
	stepOpenLog       = "open-log"
	stepEnsureLog     = "ensure-log"
	stepMarkStopped   = "mark-stopped"
	stepCheckDisk     = "check-disk"
	stepCreateTaps    = "create-taps"
	stepStartQEMU     = "start-qemu"
	stepQMPConnect    = "qmp-connect"
	stepAttachConsole = "attach-console"
	stepRunGuest      = "run-guest"
)

// runner runs steps for this operation; record persists the step a create
// is in (nil for a start, which load resolves from QEMU itself).
func (e *opEnv) runner(record func(string) error) stepRunner {
	r := stepRunner{record: record}
	if h := e.m.failStep; h != nil {
		r.inject = func(step string) error { return h(e.id, step) }
	}
	return r
}

// making is a create under way: what its steps made, for the steps after
// them and for the undos. Its undos need only the record, so a restart can
// roll back a create from the record a crash left (rollBack).
type making struct {
	e      *opEnv
	rec    *record
	netcfg []byte
	img    images.Image
	log    *qemu.SerialLog
}

func (c *making) steps() []step {
	e, rec := c.e, c.rec
	dir := e.m.vmStateDir(e.id)
	spec := rec.Spec
	return []step{{
		// Recording this step writes the record (phase creating).
		name: stepWriteState,
		do: func(context.Context) error {
			// The data plane learns of the NICs before anything can
			// reconcile them.
			e.m.setNICs(e.id, rec.NICs)
			return nil
		},
		undo: func() error {
			e.releaseNICs(rec)
			return removeAll(dir, e.m.vmRunDir(e.id))
		},
	}, {
		// The cache is shared and keeps only complete images: nothing
		// to take back.
		name: stepFetchImage,
		do: func(ctx context.Context) error {
			e.progress(1, "fetching image "+spec.Image.URL)
			img, err := e.m.cfg.Images.EnsureWith(ctx, spec.Image.URL, spec.Image.SHA256, pullPolicy(spec.Image.PullPolicy), e.downloadProgress)
			c.img = img
			return err
		},
	}, {
		name: stepCreateDisk,
		do: func(ctx context.Context) error {
			e.progress(downloadShare+5, "creating disk")
			if err := e.m.cfg.Images.CreateVMDisk(ctx, c.img, rec.Disk, int64(spec.DiskGiB)<<30); err != nil {
				return err
			}
			base, err := filepath.Abs(c.img.Path)
			if err != nil {
				return err
			}
			rec.Base, rec.BaseFormat = base, c.img.Format
			return nil
		},
		undo: func() error { return removeAll(rec.Disk) },
	}, {
		name: stepBuildSeed,
		do: func(context.Context) error {
			err := cloudinit.Write(rec.Seed, cloudinit.Seed{InstanceID: e.id, Hostname: rec.Name, UserData: spec.UserData,
				NetworkConfig: c.netcfg})
			if err != nil {
				return messages.Errorf(messages.KindInvalid, "seed_failed", "build the cloud-init seed: %v", err)
			}
			return nil
		},
		undo: func() error { return removeAll(rec.Seed) },
	}, {
		// The log file itself goes with the state dir.
		name: stepOpenLog,
		do: func(context.Context) error {
			l, err := qemu.OpenSerialLog(e.m.serialLogPath(e.id), e.m.cfg.SerialLogBytes)
			c.log = l
			return err
		},
		undo: func() error {
			if c.log == nil {
				return nil
			}
			return c.log.Close()
		},
	}, {
		name: stepMarkStopped,
		do: func(context.Context) error {
			rec.Phase, rec.Step = messages.PhaseStopped, ""
			return rec.save(dir)
		},
	}}
}

// rollBack undoes a create that the agent stopped in (a record still in
// phase creating), from the step its record names. Rolling back rather
// than resuming: the control plane redelivers the create it never saw
// finish, and redoing a step is cheap (the image stays in the cache),
// whereas resuming would trust a disk or seed the crash may have cut short.
func (e *opEnv) rollBack(rec *record) error {
	c := &making{e: e, rec: rec}
	return undo(through(c.steps(), rec.Step))
}

// launch is a start under way: what its steps made, for the steps after
// them, for the undos, and for the VM's next state.
type launch struct {
	e    *opEnv
	rec  record
	spec qemu.Spec
	proc *qemu.Process
	mon  *qemu.Monitor
	// log is the VM's serial log: the one the VM had, or one this start
	// opened (ownLog).
	log    *qemu.SerialLog
	ownLog bool
	hub    *console.Hub
}

func (l *launch) steps() []step {
	e, rec := l.e, &l.rec
	runDir := e.m.vmRunDir(e.id)
	return []step{{
		name: stepCheckDisk,
		do: func(context.Context) error {
			if _, err := os.Stat(rec.Disk); err != nil {
				return messages.Errorf(messages.KindConflict, "vm_disk_missing", "the disk of vm %s is missing: %v", e.id, err)
			}
			// QEMU opens the disk's chain as root before it drops
			// privileges: a disk made before bases were normalised may
			// sit on an image naming a host file. Nothing is started on
			// such a disk.
			if err := images.CheckDisk(rec.Disk); err != nil {
				return err
			}
			l.spec = qemu.Spec{ID: e.id, Binary: e.m.binary(rec.Spec.Arch), Arch: rec.Spec.Arch, Accel: e.m.cfg.Accel,
				CPUs: rec.Spec.CPUs, MemoryMiB: rec.Spec.MemoryMiB, Disk: rec.Disk, RunDir: runDir,
				User: e.m.cfg.QEMUUser, Sandbox: e.m.cfg.Sandbox}
			if _, err := os.Stat(rec.Seed); err == nil {
				l.spec.Seed = rec.Seed
			}
			base, format, err := e.base(rec)
			if err != nil {
				return err
			}
			// QEMU opens this base, not the one the disk's header names.
			if base != "" {
				if err := images.CheckBase(base, format); err != nil {
					return err
				}
			}
			l.spec.Base, l.spec.BaseFormat = base, format
			return nil
		},
	}, {
		// Taps stay when a later step fails: the data plane keeps the
		// taps of every VM with a record, running or not.
		name: stepCreateTaps,
		do: func(ctx context.Context) error {
			nics, err := e.createTaps(ctx, rec)
			l.spec.NICs = nics
			return err
		},
	}, {
		name: stepStartQEMU,
		do: func(ctx context.Context) error {
			proc, err := qemu.Start(ctx, l.spec)
			l.proc = proc
			return err
		},
		undo: func() error {
			if l.proc == nil {
				return nil
			}
			_ = l.proc.Kill()
			waitExit(l.proc, quitTimeout)
			return l.proc.Close()
		},
	}, {
		name: stepQMPConnect,
		do: func(ctx context.Context) error {
			cctx, cancel := context.WithTimeout(ctx, qmpTimeout)
			defer cancel()
			mon, err := qemu.Dial(cctx, qemu.QMPPath(runDir))
			l.mon = mon
			return err
		},
		undo: func() error {
			if l.mon == nil {
				return nil
			}
			return l.mon.Close()
		},
	}, {
		name: stepEnsureLog,
		do: func(context.Context) error {
			if l.log != nil {
				return nil
			}
			lg, err := qemu.OpenSerialLog(e.m.serialLogPath(e.id), e.m.cfg.SerialLogBytes)
			l.log, l.ownLog = lg, err == nil
			return err
		},
		undo: func() error {
			if !l.ownLog {
				return nil
			}
			return l.log.Close()
		},
	}, {
		// QEMU waits paused (-S) until the hub is reading its serial line,
		// so not a byte of boot output is missed.
		name: stepAttachConsole,
		do: func(context.Context) error {
			hub, err := e.m.dialConsole(e.id, l.log)
			if err == nil {
				l.hub = hub
			}
			return err
		},
		undo: func() error {
			if l.hub != nil {
				l.hub.Close(messages.ConsoleVMStopped, "the VM failed to start")
			}
			return nil
		},
	}, {
		name: stepRunGuest,
		do: func(ctx context.Context) error {
			cctx, cancel := context.WithTimeout(ctx, qmpTimeout)
			defer cancel()
			return l.mon.Cont(cctx)
		},
	}}
}
