package qemu

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidSpec wraps every validation failure of a Spec.
	ErrInvalidSpec = errors.New("qemu: invalid spec")
	// ErrNotRunning means no live QEMU of ours is behind a run directory:
	// no pid file, a dead pid, or a pid recycled by another program.
	ErrNotRunning = errors.New("qemu: not running")
	// ErrAlreadyRunning refuses a Start over a run directory whose QEMU is
	// still alive, which would otherwise lose track of it.
	ErrAlreadyRunning = errors.New("qemu: already running")
	// ErrMonitorClosed means the QMP connection has ended, normally because
	// QEMU exited.
	ErrMonitorClosed = errors.New("qemu: monitor closed")
	// ErrUnsafeImage refuses a disk whose header would make QEMU open
	// another file by path.
	ErrUnsafeImage = errors.New("qemu: unsafe image")
)

// StartError is QEMU refusing to start; Stderr holds its own words (bad
// argument, missing file), which are what an operator needs to see.
type StartError struct {
	ID     string
	Err    error  // how the launcher process ended
	Stderr string // QEMU's diagnostics, trimmed
}

func (e *StartError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("qemu: start vm %s: %v", e.ID, e.Err)
	}
	return fmt.Sprintf("qemu: start vm %s: %v: %s", e.ID, e.Err, msg)
}

func (e *StartError) Unwrap() error { return e.Err }

// QMPError is a command QEMU answered with an error.
type QMPError struct {
	Command string
	Class   string // QEMU's error class: GenericError, CommandNotFound, …
	Desc    string
}

func (e *QMPError) Error() string {
	if e.Class == "" {
		return fmt.Sprintf("qemu: qmp %s: %s", e.Command, e.Desc)
	}
	return fmt.Sprintf("qemu: qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}
