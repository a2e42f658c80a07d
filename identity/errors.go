package identity

import (
	"math"
	"time"

	"github.com/otherix/otherix/messages"
)

// Identity errors. Authentication failures are deliberately generic: a
// client never learns which part of its credentials failed (the reason is
// logged at debug level instead).
var (
	// errUnauthenticated answers every failed Authenticate, Refresh and
	// malformed Logout.
	errUnauthenticated = &messages.Error{Kind: messages.KindUnauthenticated, Code: "unauthenticated",
		Message: "missing, invalid or expired credentials"}
	// errInvalidCredentials answers a failed login, whether the account is
	// unknown, disabled or the password wrong.
	errInvalidCredentials = &messages.Error{Kind: messages.KindUnauthenticated, Code: "invalid_credentials",
		Message: "invalid email or password"}
	// errRoleExceedsCaller refuses an API token with a higher role than its
	// creator's.
	errRoleExceedsCaller = &messages.Error{Kind: messages.KindForbidden, Code: "role_exceeds_caller",
		Message: "an api token's role cannot exceed the role of its creator"}
	// errLastAdmin refuses to demote or delete the last admin.
	errLastAdmin = &messages.Error{Kind: messages.KindConflict, Code: "last_admin",
		Message: "the cluster must keep at least one admin"}
	// errWrongCurrentPassword refuses a password change whose current
	// password does not verify. It is not 401: the caller's token is fine.
	errWrongCurrentPassword = &messages.Error{Kind: messages.KindInvalid, Code: "invalid_current_password",
		Message: "current_password: does not match", Details: map[string]any{"field": "current_password"}}
)

// rateLimited answers a request over a rate limit (login per source or per
// account and source, unauthenticated paths per source, password hashing
// slots). The wait goes into details as retry_after (whole seconds, at least
// one), which the HTTP layer also sends as Retry-After.
func rateLimited(wait time.Duration) *messages.Error {
	secs := int64(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return &messages.Error{Kind: messages.KindTooManyRequests, Code: "rate_limited",
		Message: "too many requests; retry later", Details: map[string]any{"retry_after": secs}}
}

// invalidRole reports an unknown role name.
func invalidRole(role string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "invalid_role",
		Message: "role: unknown role " + quote(role) + ": want admin, operator, developer or viewer",
		Details: map[string]any{"field": "role"}}
}

// invalidTTL reports an API token lifetime that does not parse or is out of
// range.
func invalidTTL(msg string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "invalid_ttl", Message: "ttl: " + msg,
		Details: map[string]any{"field": "ttl"}}
}

func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return "\"" + s + "\""
}
