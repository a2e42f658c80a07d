package apierror

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/otherix/otherix/messages"
)

// DecodeStrict reads r into v strictly: r must hold exactly one JSON value
// and every field must be known. Strictness is the point: a misspelt field
// silently ignored would create a VM the user did not ask for, and between
// the control plane and an agent (upgraded together) it is a version
// mismatch to surface. The size limit is the caller's: wrap r in
// http.MaxBytesReader and an overrun comes back as request_too_large. Every
// error is a *messages.Error of kind invalid or too large with a stable code.
func DecodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	// A second value (or garbage) after the first is a malformed body, not
	// something to ignore.
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeError(err)
		}
		return messages.Errorf(messages.KindInvalid, "invalid_json", "the body holds data after its JSON value")
	}
	return nil
}

// TooLarge is the error for a body over limit bytes, the same whether the
// decoder or a handler's own check found it.
func TooLarge(limit int64) *messages.Error {
	return messages.Errorf(messages.KindTooLarge, "request_too_large",
		"the body is larger than %d bytes", limit).WithDetail("limit", limit)
}

// ReadError maps a failure to read a body: an overrun of
// http.MaxBytesReader is TooLarge, anything else is returned wrapped.
func ReadError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return TooLarge(tooLarge.Limit)
	}
	return err
}

// decodeError turns what encoding/json reports into an error the client can
// act on, naming the field where it can.
func decodeError(err error) error {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return TooLarge(tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return messages.Errorf(messages.KindInvalid, "invalid_json", "the body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return messages.Errorf(messages.KindInvalid, "invalid_json", "the body ends in the middle of a JSON value")
	case errors.As(err, &syntax):
		return messages.Errorf(messages.KindInvalid, "invalid_json", "malformed JSON at byte %d: %s", syntax.Offset,
			strings.TrimPrefix(syntax.Error(), "json: ")).WithDetail("offset", syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return messages.Errorf(messages.KindInvalid, "invalid_json", "the body must be a JSON object, not %s", typ.Value)
		}
		return messages.Invalid(typ.Field, "must be %s, not %s", jsonType(typ.Type.Kind().String()), typ.Value)
	}
	// encoding/json reports an unknown field only as text.
	if name, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
		name = strings.TrimSuffix(name, `"`)
		return messages.Errorf(messages.KindInvalid, "unknown_field", "unknown field %q", name).WithDetail("field", name)
	}
	return messages.Errorf(messages.KindInvalid, "invalid_json", "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonType names a Go kind the way a JSON client thinks of it.
func jsonType(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case strings.HasPrefix(goKind, "float"):
		return "a number"
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "a boolean"
	case goKind == "slice", goKind == "array":
		return "an array"
	case goKind == "struct", goKind == "map", goKind == "ptr":
		return "an object"
	}
	return "of type " + goKind
}
