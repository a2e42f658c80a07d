// Package apierror decodes the control plane's error envelope
// {"error":{"code","message","details"}} for the agent's HTTP clients.
package apierror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"unicode"
)

// Error is a refusal by the control plane. errors.Is matches another *Error
// by Code, so callers can branch with errors.Is(err, &Error{Code: "…"}).
type Error struct {
	Status  int            // HTTP status
	Code    string         // the envelope's code; "" when the body was not an envelope
	Message string         // the envelope's message, or a short excerpt of the body
	Details map[string]any // the envelope's details, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("server refused: ")
	if e.Code != "" {
		b.WriteString(e.Code + ": ")
	}
	b.WriteString(e.Message)
	if len(e.Details) > 0 {
		keys := make([]string, 0, len(e.Details))
		for k := range e.Details {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(" (")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s=%v", k, e.Details[k])
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " [HTTP %d]", e.Status)
	return b.String()
}

// Is matches an *Error with the same Code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Decode reads the envelope, or keeps a short printable excerpt of a body
// that is not one (a proxy's error page, say).
func Decode(status int, body []byte) *Error {
	var env struct {
		Error struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error.Code != "" {
		return &Error{Status: status, Code: env.Error.Code, Message: env.Error.Message, Details: env.Error.Details}
	}
	return &Error{Status: status, Message: Excerpt(body, status)}
}

// Excerpt returns up to 200 printable characters of b for an error message,
// or the status text when b has none.
func Excerpt(b []byte, status int) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.TrimSpace(string(b)))
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	if s == "" {
		s = http.StatusText(status)
	}
	return s
}
