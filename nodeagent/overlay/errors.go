package overlay

import (
	"errors"

	"github.com/otherix/otherix/messages"
)

var (
	// ErrNoDesired reports that no desired overlay has arrived from the
	// control plane yet, so no network (and no tap) can be built.
	ErrNoDesired = errors.New("overlay: no desired state from the control plane yet")
	// ErrUnknownNetwork reports a NIC on a network the control plane has not
	// put on this node.
	ErrUnknownNetwork = errors.New("overlay: network not present on this node")
)

// Unavailable is the task error of a VM whose NICs cannot be made.
func Unavailable(format string, args ...any) error {
	return messages.Errorf(messages.KindUnavailable, "network_unavailable", format, args...)
}
