package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/otherix/otherix/http/apierror"
)

// APIError is an error answer of the API, decoded from its envelope
// {"error":{"code","message","details"}}. Branch on Code: it is stable.
type APIError struct {
	Status  int
	Code    string
	Message string
	Details map[string]any
	// RequestID is the server's id for the request, for its logs.
	RequestID string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("otherix api: %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrorCode returns the API error code of err, or "" when err is not an
// *APIError.
func ErrorCode(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func decodeAPIError(resp *http.Response, raw []byte) error {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	if d, ok := apierror.Parse(raw); ok {
		e.Code, e.Message, e.Details = d.Code, d.Message, d.Details
		return e
	}
	// Not our envelope (a proxy in between, say): keep what there is.
	e.Code = "http_" + strings.ReplaceAll(strings.ToLower(http.StatusText(resp.StatusCode)), " ", "_")
	e.Message = apierror.Excerpt(raw, resp.StatusCode)
	return e
}
