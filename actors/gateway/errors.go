package gateway

import "github.com/otherix/otherix/messages"

// ErrOutOfScope is wrapped by the not-found answer for a resource that
// exists but belongs to another owner (messages.OutOfScope): the wire answer
// is a missing resource's, errors.Is tells the HTTP layer to audit a denial.
var ErrOutOfScope = messages.ErrOutOfScope
