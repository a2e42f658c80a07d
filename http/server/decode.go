package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// decodeJSON reads the request body into v strictly: the media type must be
// application/json, the body must hold exactly one JSON value, and every field
// must be known. Strictness is the point: a misspelt field silently ignored
// would create a VM the user did not ask for.
func decodeJSON(c *gin.Context, v any) error {
	if err := requireJSON(c.Request); err != nil {
		return err
	}
	dec := json.NewDecoder(c.Request.Body)
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
		return apiError(messages.KindInvalid, "invalid_json", "the body holds data after its JSON value")
	}
	return nil
}

// requireJSON refuses a body sent under any media type but application/json.
func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return apiError(kindUnsupportedMedia, "unsupported_media_type",
			"the body must be sent as application/json, not %q", ct).WithDetail("content_type", ct)
	}
	return nil
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
		return apiError(messages.KindTooLarge, "request_too_large",
			"the body is larger than %d bytes", tooLarge.Limit).WithDetail("limit", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return apiError(messages.KindInvalid, "invalid_json", "the body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apiError(messages.KindInvalid, "invalid_json", "the body ends in the middle of a JSON value")
	case errors.As(err, &syntax):
		return apiError(messages.KindInvalid, "invalid_json", "malformed JSON at byte %d: %s", syntax.Offset,
			strings.TrimPrefix(syntax.Error(), "json: ")).WithDetail("offset", syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return apiError(messages.KindInvalid, "invalid_json", "the body must be a JSON object, not %s", typ.Value)
		}
		return messages.Invalid(typ.Field, "must be %s, not %s", jsonType(typ.Type.Kind().String()), typ.Value)
	}
	// encoding/json reports an unknown field only as text.
	if name, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
		name = strings.TrimSuffix(name, `"`)
		return apiError(messages.KindInvalid, "unknown_field", "unknown field %q", name).WithDetail("field", name)
	}
	return apiError(messages.KindInvalid, "invalid_json", "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
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

// errBodyRead wraps a failure to read the body for hashing.
func errBodyRead(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return decodeError(err)
	}
	return fmt.Errorf("read body: %w", err)
}
