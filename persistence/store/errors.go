package store

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/otherix/otherix/messages"
)

// Errors of the store that are not domain errors: they signal misuse or an
// unexpected etcd answer, and surface as internal errors.
var (
	ErrTooManyOps   = errors.New("store: transaction exceeds the per-transaction op limit")
	ErrBadCursor    = errors.New("store: malformed cursor")
	ErrCorruptRow   = errors.New("store: row does not decode")
	ErrNotSeeded    = errors.New("store: settings document missing")
	ErrNoDispatcher = errors.New("store: dispatcher session closed")
)

// IsNoSpace reports whether err is etcd refusing a write because its space
// alarm is raised (the backend reached its quota). The in-process client
// returns rpctypes.ErrNoSpace; the gRPC form is matched too, for errors that
// come through a path that does not translate it.
func IsNoSpace(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace))
}

// Unavailable is unavailable for callers that use the etcd client
// directly (the watch hub): their failures answer as the store's do.
func Unavailable(err error) error { return unavailable(err) }

// unavailable turns an etcd failure into a domain error: the space alarm is
// storage_full (507, a condition that needs space freed, not a retry soon),
// a lost leader is no_quorum (503, at once: quorum.go), anything else is
// unavailable (503).
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	if IsNoSpace(err) {
		e := *messages.ErrStorageFull
		e.Err = err
		return &e
	}
	if errors.Is(err, messages.ErrNoQuorum) {
		return err
	}
	if IsNoQuorum(err) {
		return noQuorum(err)
	}
	return &messages.Error{Kind: messages.KindUnavailable, Code: "unavailable", Message: "etcd did not answer", Err: err}
}
