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

// Errors of the live block layer (block.go, hotplug.go, snapshot.go,
// jobs.go, guestagent.go). Each carries a stable code (Code) that the
// agent's task layer reports as is; callers test them with errors.Is.
var (
	// ErrInvalidDisk refuses a disk id, serial, node name or chain that
	// would not make a safe QEMU node or device name. Nothing was sent.
	ErrInvalidDisk = &BlockError{Code: "invalid_disk", Msg: "invalid disk"}
	// ErrHotplugTimeout means the guest did not release a disk within
	// the timeout of a detach (it ignores ACPI or PCIe hot-unplug, or is
	// not running): the disk stays attached and its block nodes in place.
	// QEMU cannot withdraw an unplug request, so the guest may still
	// release it later; a second Detach then finishes the job.
	ErrHotplugTimeout = &BlockError{Code: "hotplug_timeout", Msg: "the guest did not release the disk in time; it is still attached"}
	// ErrInsufficientStorage means a write the operation needed (an
	// overlay, a block job) ran out of space on the node. The VM keeps
	// running on the chain it had; partial files were removed.
	ErrInsufficientStorage = &BlockError{Code: "insufficient_storage", Msg: "not enough space on the node"}
	// ErrGuestAgentUnavailable means no QEMU guest agent answered in the
	// VM: the guest runs none, or has not started it yet.
	ErrGuestAgentUnavailable = &BlockError{Code: "guest_agent_unavailable", Msg: "no QEMU guest agent answers in the guest"}
	// ErrDiskNotFound means the VM has no disk (device or block node) of
	// that id.
	ErrDiskNotFound = &BlockError{Code: "disk_not_found", Msg: "no such disk in the VM"}
	// ErrDiskExists refuses to attach a disk id the VM already has.
	ErrDiskExists = &BlockError{Code: "disk_exists", Msg: "the VM already has a disk of that id"}
	// ErrNoHotplugSlot means every hot-plug port of the VM holds a disk.
	ErrNoHotplugSlot = &BlockError{Code: "no_hotplug_slot", Msg: "no free hot-plug port in the VM"}
	// ErrBlockJobFailed is a block job (commit, stream) that QEMU ended
	// with an error or cancelled; the chain is as it was before the job.
	ErrBlockJobFailed = &BlockError{Code: "block_job_failed", Msg: "block job failed"}
	// ErrChainTooDeep refuses a snapshot that would make a disk's chain
	// deeper than MaxChainDepth; nothing was changed.
	ErrChainTooDeep = &BlockError{Code: "snapshot_chain_too_deep", Msg: "the disk's snapshot chain is too deep: merge old snapshots first"}
	// ErrShrink refuses a block_resize to a smaller size: data past the
	// new end would be lost.
	ErrShrink = &BlockError{Code: "volume_shrink_unsupported", Msg: "a disk can only grow"}
)

// BlockError is one of the block layer's errors: a stable Code, a message
// for people, and the cause. errors.Is matches by Code, so a wrapped or
// detailed copy still matches its sentinel.
type BlockError struct {
	Code string
	Msg  string
	Err  error
}

func (e *BlockError) Error() string {
	if e.Err != nil {
		return "qemu: " + e.Msg + ": " + e.Err.Error()
	}
	return "qemu: " + e.Msg
}

func (e *BlockError) Unwrap() error { return e.Err }

// Is matches another *BlockError by code.
func (e *BlockError) Is(target error) bool {
	t, ok := target.(*BlockError)
	return ok && t.Code == e.Code
}

// with returns a copy of the sentinel e with a more specific message and
// cause.
func (e *BlockError) with(err error, format string, args ...any) *BlockError {
	return &BlockError{Code: e.Code, Msg: fmt.Sprintf(format, args...), Err: err}
}

// Code returns the stable code of a block-layer error in err's chain, or ""
// when there is none.
func Code(err error) string {
	var be *BlockError
	if errors.As(err, &be) {
		return be.Code
	}
	return ""
}
