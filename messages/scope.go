package messages

import (
	"context"
	"errors"
)

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

// callerKey keys the calling user's id in a request context.
type callerKey struct{}

// WithCaller records the calling user's id in ctx. With the any-owner scope
// (admin, operator) a VM name resolves to the caller's own VM first, so
// another user's VM of the same name never makes the caller's name ambiguous.
func WithCaller(ctx context.Context, userID string) context.Context {
	return context.WithValue(ctx, callerKey{}, userID)
}

// CallerOf returns the user id WithCaller recorded, or "".
func CallerOf(ctx context.Context) string {
	id, _ := ctx.Value(callerKey{}).(string)
	return id
}
