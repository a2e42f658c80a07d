// Package errstatus maps domain error kinds to HTTP statuses and back. The
// control plane's API, the agent's API and the client of the agent's API
// share it, so a kind means the same status on both hops.
package errstatus

import (
	"net/http"

	"github.com/otherix/otherix/messages"
)

var statuses = map[messages.Kind]int{
	messages.KindInvalid:         http.StatusBadRequest,
	messages.KindNotFound:        http.StatusNotFound,
	messages.KindConflict:        http.StatusConflict,
	messages.KindStale:           http.StatusConflict,
	messages.KindUnavailable:     http.StatusServiceUnavailable,
	messages.KindUnprocessable:   http.StatusUnprocessableEntity,
	messages.KindTooLarge:        http.StatusRequestEntityTooLarge,
	messages.KindInternal:        http.StatusInternalServerError,
	messages.KindUnauthenticated: http.StatusUnauthorized,
	messages.KindForbidden:       http.StatusForbidden,
	messages.KindTooManyRequests: http.StatusTooManyRequests,
	messages.KindStorageFull:     http.StatusInsufficientStorage,
}

// Lookup is kind's status, and whether the kind is one the table knows.
func Lookup(kind messages.Kind) (int, bool) {
	s, ok := statuses[kind]
	return s, ok
}

// Of is kind's status; a kind the table does not know is an internal error.
func Of(kind messages.Kind) int {
	if s, ok := statuses[kind]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// KindOf reads a status back into a kind: 409 is a conflict (a stale
// revision comes back as one), any gateway failure is unavailable, and a
// status the table does not know is internal.
func KindOf(status int) messages.Kind {
	switch status {
	case http.StatusConflict:
		return messages.KindConflict
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return messages.KindUnavailable
	}
	for k, s := range statuses {
		if s == status && k != messages.KindStale {
			return k
		}
	}
	return messages.KindInternal
}
