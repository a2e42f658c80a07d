// Package apierror owns the error envelope both processes put on the wire,
// {"error":{"code","message","details"}}, how a client reads one back, the
// status each error kind answers with, and the strict JSON decoding both APIs
// apply to request bodies. The control
// plane's API, the agent's API and every client of either use it, so the
// envelope is declared once and a message from the other side is bounded the
// same way everywhere.
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

// Body is the error envelope.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the envelope's content. Details is always written (an empty
// object when there are none) so clients never meet null.
type Detail struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

// NewBody is the envelope for one error; nil details become {}.
func NewBody(code, message string, details map[string]any) Body {
	if details == nil {
		details = map[string]any{}
	}
	return Body{Error: Detail{Code: code, Message: message, Details: details}}
}

// MaxMessage bounds, in characters, any message a client keeps from an
// answer: the envelope's message or an excerpt of a body that is not one.
const MaxMessage = 512

// Parse reads an envelope from an error answer's body. ok is false when the
// body is not one (no code), say a proxy's error page. The message is bounded
// and stripped of unprintable characters, as Excerpt does: the far side is
// not trusted to keep a terminal or a log line safe.
func Parse(body []byte) (d Detail, ok bool) {
	var env struct {
		Error *Detail `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil || env.Error.Code == "" {
		return Detail{}, false
	}
	d = *env.Error
	d.Message = clean(d.Message)
	return d, true
}

// Excerpt returns up to MaxMessage printable characters of b for an error
// message, or the status text when b has none.
func Excerpt(b []byte, status int) string {
	if s := clean(string(b)); s != "" {
		return s
	}
	return http.StatusText(status)
}

func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.TrimSpace(s))
	if r := []rune(s); len(r) > MaxMessage {
		s = string(r[:MaxMessage]) + "…"
	}
	return s
}

// Error is a refusal read back from an answer. errors.Is matches another
// *Error by Code, so callers can branch with errors.Is(err, &Error{Code: "…"}).
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

// Decode reads the envelope, or keeps an excerpt of a body that is not one.
func Decode(status int, body []byte) *Error {
	if d, ok := Parse(body); ok {
		return &Error{Status: status, Code: d.Code, Message: d.Message, Details: d.Details}
	}
	return &Error{Status: status, Message: Excerpt(body, status)}
}
