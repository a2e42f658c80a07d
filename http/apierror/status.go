package apierror

// The status table: a domain error kind means the same HTTP status on both
// hops (user to control plane, control plane to agent), and a client reads a
// status back into the same kind.

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

// LookupStatus is kind's status, and whether the kind is one the table knows.
func LookupStatus(kind messages.Kind) (int, bool) {
	s, ok := statuses[kind]
	return s, ok
}

// Status is kind's status; a kind the table does not know is an internal error.
func Status(kind messages.Kind) int {
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
