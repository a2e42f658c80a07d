package security

import (
	"errors"

	"github.com/otherix/otherix/messages"
)

// Sentinels for token and hash failures. messages has no "unauthenticated"
// kind, so these stay plain errors; the HTTP layer maps them (401 with the
// RFC 6750 code invalid_token, for instance). Returned errors wrap them with a
// short reason for logs, never with the token itself.
var (
	// ErrTokenExpired reports an access token past its exp (plus leeway).
	ErrTokenExpired = errors.New("security: token expired")
	// ErrTokenInvalid reports any other unusable token: malformed, truncated,
	// wrongly signed, signed with an unknown or retired key, not yet valid, or
	// with missing claims. Callers must not tell these apart to clients.
	ErrTokenInvalid = errors.New("security: invalid token")
	// ErrMalformedHash reports a stored password hash that does not decode.
	ErrMalformedHash = errors.New("security: malformed password hash")
	// ErrBadParams reports argon2id parameters outside the accepted range.
	ErrBadParams = errors.New("security: argon2id parameters out of range")
)

// Password rule violations. They are domain errors (KindInvalid) because the
// user can fix them; errors.Is matches them by code.
var (
	// ErrPasswordTooShort reports a password under MinPasswordRunes characters.
	ErrPasswordTooShort = &messages.Error{Kind: messages.KindInvalid, Code: "password_too_short",
		Message: "the password must be at least 12 characters long",
		Details: map[string]any{"field": "password", "min_chars": MinPasswordRunes}}
	// ErrPasswordTooLong reports a password over MaxPasswordBytes bytes.
	ErrPasswordTooLong = &messages.Error{Kind: messages.KindInvalid, Code: "password_too_long",
		Message: "the password must be at most 1024 bytes long",
		Details: map[string]any{"field": "password", "max_bytes": MaxPasswordBytes}}
	// ErrPasswordTooCommon reports a password found in (or derived from) the
	// built-in list of common passwords.
	ErrPasswordTooCommon = &messages.Error{Kind: messages.KindInvalid, Code: "password_too_common",
		Message: "the password is too common; choose a less predictable one",
		Details: map[string]any{"field": "password"}}
)

// Misuse errors: the caller passed something no valid flow produces.
var (
	// ErrBadSigningKey reports a signing key without an id or with a secret
	// shorter than 32 bytes, which Issue refuses to sign with.
	ErrBadSigningKey = errors.New("security: signing key without id or too short")
	// ErrBadClaims reports an access token request with an empty user id, an
	// unknown role or a lifetime outside (0, MaxAccessTTL].
	ErrBadClaims = errors.New("security: bad access token claims")
)
