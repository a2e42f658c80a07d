package store

import "errors"

// Errors of the store that are not domain errors: they signal misuse or an
// unexpected etcd answer, and surface as internal errors.
var (
	ErrTooManyOps   = errors.New("store: transaction exceeds the per-transaction op limit")
	ErrBadCursor    = errors.New("store: malformed cursor")
	ErrCorruptRow   = errors.New("store: row does not decode")
	ErrNotSeeded    = errors.New("store: settings document missing")
	ErrNoDispatcher = errors.New("store: dispatcher session closed")
)
