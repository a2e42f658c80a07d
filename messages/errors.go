package messages

import (
	"errors"
	"fmt"
)

// Kind classifies a domain error; the HTTP layer maps each kind to one status.
type Kind int

// Error kinds. Each maps to exactly one HTTP status (http/apierror).
const (
	KindInternal        Kind = iota
	KindInvalid              // the request is malformed or violates a rule
	KindNotFound             // the resource does not exist or the caller may not see it
	KindConflict             // a uniqueness guard or a state rule refuses the change
	KindStale                // an optimistic-concurrency revision did not match
	KindUnavailable          // a dependency (etcd, an actor) cannot answer right now
	KindUnprocessable        // well-formed but contradicts an earlier request (idempotency key reuse)
	KindTooLarge             // the request body is over its limit
	KindUnauthenticated      // no valid credentials: missing, malformed, expired or revoked
	KindForbidden            // authenticated, but the role may never do this
	KindTooManyRequests      // rate limited; retry later
	KindStorageFull          // the store reached its space quota and refuses writes; reads still work
)

// Error is a domain error with a stable, machine-readable code. Codes are part
// of the public API: clients branch on them, so never rename one.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Details map[string]any
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error by code, so callers can test errors.Is(err, ErrTaskTerminal).
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Errorf builds a domain error.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithDetail returns a copy of e carrying one more detail.
func (e *Error) WithDetail(key string, value any) *Error {
	c := *e
	c.Details = make(map[string]any, len(e.Details)+1)
	for k, v := range e.Details {
		c.Details[k] = v
	}
	c.Details[key] = value
	return &c
}

// Sentinels for errors.Is. Their messages are generic; the instances returned
// by the store and actors carry specific messages with the same codes.
var (
	ErrNotFound       = &Error{Kind: KindNotFound, Code: "not_found", Message: "not found"}
	ErrStaleRevision  = &Error{Kind: KindStale, Code: "revision_conflict", Message: "the resource changed since the given revision"}
	ErrTaskTerminal   = &Error{Kind: KindConflict, Code: "task_terminal", Message: "the task has already finished"}
	ErrTaskNotPending = &Error{Kind: KindConflict, Code: "task_not_cancellable", Message: "only a pending task can be cancelled"}
	ErrClaimLost      = &Error{Kind: KindConflict, Code: "job_claim_lost", Message: "the job was claimed by another dispatcher"}
	ErrUnavailable    = &Error{Kind: KindUnavailable, Code: "unavailable", Message: "the control plane cannot answer right now"}
	// ErrNoQuorum answers writes and linearizable reads on a replica that
	// is not in touch with a majority of the replicas (its etcd member
	// knows no leader): it is refused at once rather than held until etcd
	// gives up. Another replica may have quorum; this one recovers by
	// itself when the majority is back (docs/ha.md, "Without quorum").
	ErrNoQuorum = &Error{Kind: KindUnavailable, Code: "no_quorum",
		Message: "this replica is not in touch with a majority of the control plane's replicas; retry on another replica or later"}
	// ErrStorageFull answers every write while etcd's space alarm is raised.
	// The control plane frees space and disarms the alarm by itself when it
	// can (docs/operations.md); reads keep working meanwhile.
	ErrStorageFull = &Error{Kind: KindStorageFull, Code: "storage_full",
		Message: "the control plane's store is full and refuses writes until space is freed; reads still work"}
)

// NotFound reports a missing resource by kind and key.
func NotFound(resource, key string) *Error {
	return &Error{Kind: KindNotFound, Code: "not_found", Message: fmt.Sprintf("%s %q not found", resource, key),
		Details: map[string]any{"resource": resource}}
}

// NameConflict reports a uniqueness guard that refused a value, with a code
// such as vm_name_conflict.
func NameConflict(resource, field, value string) *Error {
	return &Error{Kind: KindConflict, Code: singular(resource) + "_" + field + "_conflict",
		Message: fmt.Sprintf("a %s with %s %q already exists", singular(resource), field, value),
		Details: map[string]any{"field": field}}
}

// Invalid reports one field that violates a rule.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Code: "invalid_field", Message: field + ": " + fmt.Sprintf(format, args...),
		Details: map[string]any{"field": field}}
}

// singular turns a key-schema resource name into the noun used in error codes.
func singular(resource string) string {
	if n := len(resource); n > 1 && resource[n-1] == 's' {
		return resource[:n-1]
	}
	return resource
}

// KindOf returns the kind of a domain error, or KindInternal for anything else.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
