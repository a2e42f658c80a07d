package netfabric

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid reports a Desired state or Options that cannot be applied.
	ErrInvalid = errors.New("netfabric: invalid configuration")
	// ErrNoWireGuard reports that the requested WireGuard implementation is not available.
	ErrNoWireGuard = errors.New("netfabric: wireguard implementation unavailable")
	// ErrHostConflict reports a Desired state that would route over
	// prefixes the host already uses (see HostConflictError).
	ErrHostConflict = errors.New("netfabric: prefix overlaps the host's")
	// ErrClosed reports use of a closed Fabric.
	ErrClosed = errors.New("netfabric: fabric closed")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
