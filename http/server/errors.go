package server

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Transport-only kinds. The domain never produces them (media types and
// routing are HTTP notions), so they live here, above messages' range, and go
// through the same table as every domain kind.
const (
	kindUnsupportedMedia messages.Kind = 1000 + iota
	kindRouteNotFound
	kindMethodNotAllowed
	// kindGone is history a client asked for that is no longer kept (a
	// compacted watch revision): it must list again.
	kindGone
)

// ctxOutOfScope marks a request answered not found because the resource
// belongs to another owner (messages.ErrOutOfScope). The answer is a missing
// resource's; the audit records the attempt as a denial (result "denied").
const ctxOutOfScope = "otherix.out_of_scope"

// kindRule is how one error kind reaches the wire.
type kindRule struct {
	status int
	// code, when set, replaces the error's own code: every stale write is a
	// revision_conflict whatever the layer below called it, and an internal
	// error never shows its code.
	code string
}

// kinds holds what this API does differently from apierror's status table, the
// table every API shares: codes that replace the error's own, and kinds of
// its own. Nothing else in the package chooses a status for an error.
var kinds = map[messages.Kind]kindRule{
	messages.KindStale:    {status: http.StatusConflict, code: "revision_conflict"},
	messages.KindInternal: {status: http.StatusInternalServerError, code: codeInternal},
	kindUnsupportedMedia:  {status: http.StatusUnsupportedMediaType},
	kindRouteNotFound:     {status: http.StatusNotFound},
	kindMethodNotAllowed:  {status: http.StatusMethodNotAllowed},
	kindGone:              {status: http.StatusGone},
}

const (
	codeInternal = "internal"
	// internalMessage is all a client learns of an internal error; the cause
	// goes to the log with the request id, never to the wire.
	internalMessage = "internal server error; quote the request id to an operator"
)

// apiError builds an error raised by the HTTP layer itself.
func apiError(kind messages.Kind, code, format string, args ...any) *messages.Error {
	return messages.Errorf(kind, code, format, args...)
}

// classify turns any error into the domain error that goes on the wire and
// the table row that says how.
func classify(err error) (*messages.Error, kindRule) {
	var e *messages.Error
	switch {
	case store.IsNoSpace(err):
		// Whatever layer wrapped it, and whatever it called it, a write
		// etcd refused for space is storage_full.
		full := *messages.ErrStorageFull
		full.Err = err
		e = &full
	case store.IsNoQuorum(err):
		// Likewise a lost leader, however it was wrapped or named.
		nq := *messages.ErrNoQuorum
		nq.Err = err
		e = &nq
	case errors.As(err, &e):
	case errors.Is(err, store.ErrBadCursor):
		e = apiError(messages.KindInvalid, "invalid_cursor", "the cursor is malformed; start again without one")
	case errors.Is(err, context.DeadlineExceeded):
		e = &messages.Error{Kind: messages.KindUnavailable, Code: "timeout", Message: "the control plane did not answer in time", Err: err}
	default:
		e = &messages.Error{Kind: messages.KindInternal, Code: codeInternal, Err: err}
	}
	if rule, ok := kinds[e.Kind]; ok {
		return e, rule
	}
	if status, ok := apierror.LookupStatus(e.Kind); ok {
		return e, kindRule{status: status}
	}
	return e, kinds[messages.KindInternal]
}

// writeError answers the request with the envelope for err and stops the
// handler chain. Internal errors are logged here, once, at the boundary.
func (s *Server) writeError(c *gin.Context, err error) { s.respond(c, err, true) }

// respond writes the envelope; logIt=false is for callers that logged already.
func (s *Server) respond(c *gin.Context, err error, logIt bool) {
	e, rule := classify(err)
	code, msg, details := e.Code, e.Message, e.Details
	if rule.code != "" {
		code = rule.code
	}
	if logIt && rule.status >= http.StatusInternalServerError {
		level := slog.LevelError
		if rule.status != http.StatusInternalServerError {
			level = slog.LevelWarn
		}
		s.log.LogAttrs(c.Request.Context(), level, "request failed",
			slog.String("request_id", requestID(c)), slog.String("code", e.Code), slog.Any("error", err))
	}
	if rule.status == http.StatusInternalServerError {
		msg, details = internalMessage, nil
	}
	if code == "" {
		code = codeInternal
	}
	switch rule.status {
	case http.StatusUnauthorized:
		c.Header("WWW-Authenticate", `Bearer realm="otherix"`)
	case http.StatusTooManyRequests:
		if after, ok := retryAfter(details); ok {
			c.Header("Retry-After", after)
		}
	}
	c.Set(ctxErrorCode, code)
	if errors.Is(err, messages.ErrOutOfScope) {
		c.Set(ctxDenied, true)
		c.Set(ctxOutOfScope, true)
	}
	c.AbortWithStatusJSON(rule.status, apierror.NewBody(code, msg, details))
}

// retryAfter reads the wait a rate limiter put in the details
// ("retry_after", in whole seconds) as a Retry-After value.
func retryAfter(details map[string]any) (string, bool) {
	var secs int64
	switch v := details["retry_after"].(type) {
	case int:
		secs = int64(v)
	case int64:
		secs = v
	case float64:
		secs = int64(math.Ceil(v))
	case time.Duration:
		secs = int64(math.Ceil(v.Seconds()))
	default:
		return "", false
	}
	if secs < 1 {
		secs = 1
	}
	return strconv.FormatInt(secs, 10), true
}
