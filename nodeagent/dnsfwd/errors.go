package dnsfwd

import "errors"

// Errors of the forwarder.
var (
	// ErrNoUpstream means resolv.conf names no usable resolver.
	ErrNoUpstream = errors.New("dnsfwd: no upstream resolver")
	// ErrClosed is returned by calls on a closed Forwarder.
	ErrClosed = errors.New("dnsfwd: forwarder closed")
)
