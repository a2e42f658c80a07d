package messages

import "errors"

// ErrOutOfScope marks a not-found answer for a resource that exists but
// belongs to another owner. It never changes the wire answer (same code,
// message and details as a missing resource, so existence does not leak);
// it lets the HTTP layer audit the attempt like an authorization denial.
var ErrOutOfScope = errors.New("resource outside the caller's scope")

// OutOfScope is NotFound(resource, key) wrapping ErrOutOfScope:
// errors.Is(err, ErrOutOfScope) holds, and the envelope is identical to a
// missing resource's.
func OutOfScope(resource, key string) *Error {
	e := NotFound(resource, key)
	e.Err = ErrOutOfScope
	return e
}
