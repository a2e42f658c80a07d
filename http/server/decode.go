package server

import (
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/http/apierror"
)

// decodeJSON reads the request body into v strictly (apierror.DecodeStrict)
// after checking that it was sent as application/json.
func decodeJSON(c *gin.Context, v any) error {
	if err := requireJSON(c.Request); err != nil {
		return err
	}
	return apierror.DecodeStrict(c.Request.Body, v)
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

// errBodyRead wraps a failure to read the body for hashing.
func errBodyRead(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return apierror.TooLarge(tooLarge.Limit)
	}
	return fmt.Errorf("read body: %w", err)
}
