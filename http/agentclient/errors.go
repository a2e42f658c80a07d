package agentclient

import (
	"errors"
	"fmt"
)

// Sentinels for errors.Is.
var (
	// ErrUnreachable wraps every failure to exchange a request with an
	// agent: dial, TLS handshake, timeout, a connection cut mid-answer.
	ErrUnreachable = errors.New("agentclient: node unreachable")
	// ErrUntrustedAgent wraps (with ErrUnreachable) a server certificate
	// that does not chain to the cluster CA or does not name the node.
	ErrUntrustedAgent = errors.New("agentclient: agent certificate refused")
	// ErrAgentUnavailable wraps a 5xx answer: the agent is there but cannot
	// do the work now.
	ErrAgentUnavailable = errors.New("agentclient: agent unavailable")
	// ErrBadResponse is an answer that is too large or not the JSON asked for.
	ErrBadResponse = errors.New("agentclient: bad response")
	// ErrNoEndpoint is a node without a usable https endpoint.
	ErrNoEndpoint = errors.New("agentclient: no agent endpoint")
)

// Error is one failed agent call: Status is the HTTP status (0 when no
// answer came), Err the cause: a *messages.Error for an error envelope,
// wrapping ErrUnreachable for a transport failure.
type Error struct {
	Status int
	Err    error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("status %d: %v", e.Status, e.Err)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether err is worth trying again later with the same
// request: the agent could not be reached, was unavailable, or answered
// garbage. An error envelope below 500 is the agent's considered answer.
func Retryable(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrAgentUnavailable) ||
		errors.Is(err, ErrBadResponse) || errors.Is(err, ErrNoEndpoint)
}
