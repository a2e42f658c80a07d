package vmactor

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// What QEMU says on its own, and what the actor makes of it.
//
// A drain goroutine per QMP connection forwards every event to the VM's
// actor (qmpEvent). Events that only matter when QEMU ends (SHUTDOWN with
// its cause, GUEST_PANICKED) are remembered in the actor and read when the
// exit is observed; the exit watcher waits for the drain to end first, so
// the cause is always known by then. Events that change a live VM's phase
// (STOP, RESUME, a guest's RESET, BLOCK_IO_ERROR) queue one opEvent, which
// re-reads QEMU's run state through the actor's queue like any other
// operation. Either way the agent then asks for a heartbeat at once
// (Config.Changed), so the control plane hears of it within a second.

// opEvent re-reads a live VM's run state after QEMU announced a change.
const opEvent = "observe-event"

// exitDrainWait bounds how long the exit watcher waits for the last events
// of an ended QEMU: its socket closes with it, so this is only reached if
// the drain is stuck.
const exitDrainWait = 2 * time.Second

// qmpEvent is one event from the VM's QMP connection mon.
type qmpEvent struct {
	mon *qemu.Monitor
	ev  qemu.Event
}

// observation is what the events since the last operation said, carried by
// the operation that records it (opEvent or opObserveExit).
type observation struct {
	// ioError describes the failed disk write QEMU paused the guest on.
	ioError string
	// reset is when the guest reset itself; zero if it did not.
	reset time.Time
	// reason and message are why QEMU ended, for opObserveExit; empty if
	// no event said.
	reason, message string
}

// eventState is the actor's part of the above.
type eventState struct {
	// wg counts the drain and exit-watch goroutines; release waits for
	// them, and they end when the actor's ctx is cancelled (or sooner).
	wg sync.WaitGroup
	// mon is the monitor being drained; drained closes when its drain ends.
	mon     *qemu.Monitor
	drained chan struct{}
	// exit is why the current QEMU is ending, from SHUTDOWN and
	// GUEST_PANICKED; reset for each new QEMU.
	exit observation
	// ioError is the current QEMU's last failed disk write QEMU paused on,
	// for an opEvent that starts after the one it merged into.
	ioError string
	// pending is the queued opEvent not started yet: later events merge
	// into it instead of queueing another.
	pending *work
	// lastReset is when a guest's reset was last noted.
	lastReset time.Time
}

// resetNoteEvery bounds how often a guest's own resets are recorded.
const resetNoteEvery = 10 * time.Second

// minWakeGap bounds how often VM events wake the heartbeat: a node whose
// guests change state in a burst sends one beat for the burst, at most a
// second later.
const minWakeGap = time.Second

// wakeLimiter calls Config.Changed at most once per minWakeGap; a change
// inside the gap is carried by one trailing call at its end.
type wakeLimiter struct {
	mu      sync.Mutex
	last    time.Time
	pending *time.Timer
	closed  bool
}

// changed asks for a heartbeat now, or at the end of the current gap.
func (m *Manager) changed() {
	if m.cfg.Changed == nil {
		return
	}
	w := &m.wake
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.pending != nil {
		return
	}
	now := time.Now()
	if wait := w.last.Add(minWakeGap).Sub(now); wait > 0 {
		w.pending = time.AfterFunc(wait, func() {
			w.mu.Lock()
			w.pending, w.last = nil, time.Now()
			closed := w.closed
			w.mu.Unlock()
			if !closed {
				m.cfg.Changed()
			}
		})
		return
	}
	w.last = now
	m.cfg.Changed()
}

// stopWakes drops a trailing wake; Close calls it.
func (m *Manager) stopWakes() {
	w := &m.wake
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.pending != nil {
		w.pending.Stop()
		w.pending = nil
	}
}

// watch starts draining a new monitor and watching a new QEMU for its
// exit. It replaces apply's former exit watcher: the exit is sent only
// after the drain of the monitor ended, so every event precedes it.
func (a *vmActor) watch(ctx actor.Context, st vmState) {
	self, sys, stop := ctx.Self(), ctx.ActorSystem(), a.ctx.Done()
	if st.mon != nil && st.mon != a.ev.mon {
		mon, drained := st.mon, make(chan struct{})
		a.ev.mon, a.ev.drained = mon, drained
		events := mon.Events()
		a.ev.wg.Add(1)
		drain := func() {
			defer a.ev.wg.Done()
			defer close(drained)
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						return
					}
					sys.Root.Send(self, fromGo{from: a, msg: qmpEvent{mon: mon, ev: ev}})
				case <-stop:
					return
				}
			}
		}
		if !a.spawn(drain) {
			// The actor or the manager is closing: nothing is drained.
			a.ev.wg.Done()
			close(drained)
		}
	}
	if st.proc != nil && st.proc != a.watching {
		a.watching = st.proc
		a.ev.exit, a.ev.ioError = observation{}, ""
		proc := st.proc
		var drained <-chan struct{}
		if st.mon != nil {
			drained = a.ev.drained
		}
		a.ev.wg.Add(1)
		exitWatch := func() {
			defer a.ev.wg.Done()
			select {
			case <-proc.Exited():
			case <-stop:
				return
			}
			if drained != nil {
				t := time.NewTimer(exitDrainWait)
				select {
				case <-drained:
				case <-t.C:
				case <-stop:
				}
				t.Stop()
			}
			sys.Root.Send(self, fromGo{from: a, msg: exited{proc: proc}})
		}
		if !a.spawn(exitWatch) {
			// Closing: kick notices an exit anyway.
			a.ev.wg.Done()
		}
	}
}

// waitWatchers waits for the goroutines watch started; the actor's ctx is
// cancelled and its monitor closed by then, which ends them.
func (a *vmActor) waitWatchers() {
	a.ev.wg.Wait()
	a.ev.mon, a.ev.drained = nil, nil
}

// onEvent handles one QMP event of the VM's current connection.
func (a *vmActor) onEvent(ctx actor.Context, msg qmpEvent) {
	if msg.mon != a.st.mon || a.st.rec == nil {
		return // a connection since replaced
	}
	ev := msg.ev
	guest, _ := ev.Data["guest"].(bool)
	switch ev.Name {
	case "SHUTDOWN":
		// QEMU ends after it (the agent never passes -no-shutdown).
		cause, _ := ev.Data["reason"].(string)
		switch {
		case cause == "guest-panic":
			a.ev.exit.reason, a.ev.exit.message = messages.ReasonGuestPanicked, panickedMessage
		case guest && a.ev.exit.reason == "":
			a.ev.exit.reason, a.ev.exit.message = messages.ReasonGuestShutdown, "the guest powered itself off"
		case cause == "host-signal" && a.ev.exit.reason == "":
			a.ev.exit.reason, a.ev.exit.message = messages.ReasonQEMUExited, "QEMU was ended by a signal on the node"
		}
	case "GUEST_PANICKED":
		a.ev.exit.reason, a.ev.exit.message = messages.ReasonGuestPanicked, panickedMessage
		if action, _ := ev.Data["action"].(string); action == "pause" {
			a.queueEvent(ctx, func(o *observation) {})
		}
	case "BLOCK_IO_ERROR":
		if action, _ := ev.Data["action"].(string); action != "stop" {
			return // reported to the guest, or ignored: the VM runs on
		}
		desc := ioErrorText(ev.Data)
		a.ev.ioError = desc
		a.queueEvent(ctx, func(o *observation) { o.ioError = desc })
	case "RESET":
		if !guest {
			return // our own reboot --force
		}
		// A guest that resets in a loop costs one note per interval, not
		// a record write and a heartbeat per reset.
		if now := time.Now(); now.Sub(a.ev.lastReset) >= resetNoteEvery {
			a.ev.lastReset = now
		} else {
			return
		}
		at := ev.Time
		a.queueEvent(ctx, func(o *observation) { o.reset = at })
	case "STOP", "RESUME":
		a.queueEvent(ctx, func(*observation) {})
	}
}

const panickedMessage = "the guest kernel panicked and QEMU stopped it; its last output is in the serial log (otherix vm logs)"

// queueEvent queues an opEvent, or merges into the one already queued.
func (a *vmActor) queueEvent(ctx actor.Context, edit func(*observation)) {
	if a.ev.pending == nil {
		a.ev.pending = &work{op: opEvent, obs: &observation{}}
		a.queue = append(a.queue, a.ev.pending)
	}
	edit(a.ev.pending.obs)
	a.kick(ctx)
}

// starting is called as w leaves the queue: an opEvent no longer takes
// merges, and an exit observation takes the cause the events gave.
func (a *vmActor) starting(w *work) {
	if w == a.ev.pending {
		a.ev.pending = nil
	}
	if w.op == opEvent && w.obs != nil && w.obs.ioError == "" {
		w.obs.ioError = a.ev.ioError
	}
	if w.op == opObserveExit {
		o := a.ev.exit
		w.obs = &o
	}
}

// observedChange asks for a heartbeat now after an operation that recorded
// a change QEMU announced on its own; tasks report their own outcome.
func (a *vmActor) observedChange(w *work) {
	if w == nil || (w.op != opEvent && w.op != opObserveExit) {
		return
	}
	a.m.changed()
}

// ioErrorText describes a BLOCK_IO_ERROR for people, naming the disk as
// the guest sees it.
func ioErrorText(d map[string]any) string {
	node, _ := d["node-name"].(string)
	if node == "" {
		node, _ = d["device"].(string)
	}
	// Node names derive from the disk's id (qemu/names.go): "disk0-s2"
	// is the boot disk's snapshot overlay, "data1-file" a hot-plugged
	// disk's image.
	disk := qemu.DiskOfNode(node)
	switch disk {
	case "disk0":
		disk = "vda"
	case "seed0":
		disk = "vdb (the cloud-init seed)"
	case "base0":
		disk = "vda (its base image)"
	}
	op, _ := d["operation"].(string)
	why, _ := d["reason"].(string)
	// QEMU's strings, bounded: a QEMU the guest took over could send any.
	disk, op, why = clip(disk), clip(op), clip(why)
	if why == "" {
		why = "unknown error"
	}
	if nospace, _ := d["nospace"].(bool); nospace {
		return fmt.Sprintf("I/O error on disk %s: %s (the node is out of space for it; free space, then otherix vm resume)", disk, why)
	}
	return strings.TrimSpace(fmt.Sprintf("I/O error on disk %s: %s %s", disk, op, why))
}

// observeEvent re-reads a live VM's run state and records the phase with
// the reason the events gave.
func (e *opEnv) observeEvent(ctx context.Context, st vmState) (vmState, error) {
	if st.rec == nil || !alive(st) {
		return st, nil // it ended meanwhile: the exit says why
	}
	var s qemu.Status
	err := e.qmp(ctx, &st, func(c context.Context, mon *qemu.Monitor) error {
		var err error
		s, err = mon.Status(c)
		return err
	})
	if err != nil {
		return st, err
	}
	o := e.w.obs
	if o == nil {
		o = &observation{}
	}
	rec := *st.rec
	rec.Phase = phaseOf(s)
	switch {
	case s.Status == "io-error":
		rec.Reason, rec.Message = messages.ReasonIOError, "paused: "+orText(o.ioError, "a disk write failed")
	case s.Status == "guest-panicked":
		rec.Reason, rec.Message = messages.ReasonGuestPanicked, panickedMessage
	case rec.Phase == messages.PhaseRunning && !o.reset.IsZero():
		rec.Reason = messages.ReasonGuestReset
		rec.Message = "the guest rebooted itself at " + o.reset.UTC().Format(time.RFC3339)
	case rec.Phase == messages.PhaseRunning && messages.Interrupting(rec.Reason):
		rec.Reason, rec.Message = "", ""
	}
	if rec.Phase == st.rec.Phase && rec.Reason == st.rec.Reason && rec.Message == st.rec.Message {
		return st, nil
	}
	st.rec = &rec
	return st, rec.save(e.m.vmStateDir(e.id))
}

// observeExit records a QEMU that ended on its own, with the cause its
// last events gave: stopped (the guest powered off, or QEMU ended) or
// crashed (the guest panicked).
func (e *opEnv) observeExit(st vmState) (vmState, error) {
	o := observation{}
	if e.w.obs != nil {
		o = *e.w.obs
	}
	if o.reason == "" {
		o.reason, o.message = messages.ReasonQEMUExited, "QEMU exited without the guest powering off (killed, or it failed)"
	}
	e.m.cfg.Log.Info("qemu exited", "vm", e.id, "pid", st.rec.Pid, "reason", o.reason)
	next, err := e.stopped(st, o.message)
	if err != nil || next.rec == nil {
		return next, err
	}
	next.rec.Reason = o.reason
	if o.reason == messages.ReasonGuestPanicked {
		next.rec.Phase = messages.PhaseCrashed
	}
	return next, next.rec.save(e.m.vmStateDir(e.id))
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// clip bounds one string QEMU sent before it goes into a message.
func clip(s string) string {
	const maxField = 128
	if len(s) <= maxField {
		return s
	}
	return strings.ToValidUTF8(s[:maxField], "") + "…"
}
