package gateway

import "github.com/otherix/otherix/messages"

// ErrOutOfScope is wrapped by the not-found answer for a resource that
// exists but belongs to another owner (messages.OutOfScope): the wire answer
// is a missing resource's, errors.Is tells the HTTP layer to audit a denial.
var ErrOutOfScope = messages.ErrOutOfScope

// invalidTTL reports a join token lifetime that does not parse or is out of
// range. Package identity has its own for API tokens; this one goes with the
// join tokens.
func invalidTTL(msg string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "invalid_ttl", Message: "ttl: " + msg,
		Details: map[string]any{"field": "ttl"}}
}
