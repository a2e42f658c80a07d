package console

import (
	"errors"
	"fmt"
)

// Sentinel errors of the console hub.
var (
	// ErrBusy refuses a second interactive session without force.
	ErrBusy = errors.New("console: an interactive session is already attached")
	// ErrClosed refuses an attach to a hub whose serial line has ended
	// (QEMU exited) or that the agent closed.
	ErrClosed = errors.New("console: closed")
	// ErrMode refuses a mode other than interactive or readonly.
	ErrMode = errors.New("console: unknown mode")
	// ErrReadOnly refuses input from a read-only session.
	ErrReadOnly = errors.New("console: read-only session")
)

// ClosedError is why a session ended: a WebSocket close code of
// messages/console.go (or a standard one) and a short reason.
type ClosedError struct {
	Code   int
	Reason string
}

func (e *ClosedError) Error() string {
	return fmt.Sprintf("console: session closed (%d): %s", e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrClosed) true for a session's close.
func (e *ClosedError) Is(target error) bool { return target == ErrClosed }
