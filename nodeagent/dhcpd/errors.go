package dhcpd

import "errors"

// Errors of the responder.
var (
	// ErrInvalid wraps a Config or Lease the responder cannot use.
	ErrInvalid = errors.New("dhcpd: invalid")
	// ErrClosed is returned by calls on a closed Server.
	ErrClosed = errors.New("dhcpd: server closed")
)
