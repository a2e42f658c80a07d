package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/internal/requestid"
)

// HeaderRequestID carries the request id in and out.
const HeaderRequestID = requestid.Header

const ctxRequestID = "otherix.request_id"

// unmatchedRoute labels requests no route matched, so a scanner walking random
// paths cannot blow up log and metric cardinality.
const unmatchedRoute = "unmatched"

// requestIDMiddleware adopts the caller's request id when it is sane (so a
// trace crosses the CLI, a proxy and us) and makes one otherwise. The id
// also rides the request's context, for the calls it makes to agents.
func requestIDMiddleware(c *gin.Context) {
	id := c.GetHeader(HeaderRequestID)
	if !requestid.Sane(id) {
		id = requestid.New()
	}
	c.Set(ctxRequestID, id)
	c.Request = c.Request.WithContext(requestid.With(c.Request.Context(), id))
	c.Header(HeaderRequestID, id)
	c.Next()
}

// requestID returns the id requestIDMiddleware assigned.
func requestID(c *gin.Context) string { return c.GetString(ctxRequestID) }

// routeOf is the route template, the label for logs and metrics.
func routeOf(c *gin.Context) string {
	if r := c.FullPath(); r != "" {
		return r
	}
	return unmatchedRoute
}

// quietRoutes are polled by probes and scrapers every few seconds; their
// access lines go to debug so they do not drown the log.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// observe writes the access log line and the request metrics once the rest
// of the chain has answered.
func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	elapsed := time.Since(start)
	route, status := routeOf(c), c.Writer.Status()
	if s.metrics != nil {
		s.metrics.observe(c.Request.Method, route, status, elapsed)
	}
	level := slog.LevelInfo
	if quietRoutes[route] && status < 400 {
		level = slog.LevelDebug
	}
	s.log.LogAttrs(c.Request.Context(), level, "http request",
		slog.String("method", c.Request.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("duration", elapsed),
		slog.String("request_id", requestID(c)),
		slog.Int("bytes", max(c.Writer.Size(), 0)),
	)
}

// recovery turns a panic into a 500 envelope and a log line with the stack,
// so one bad request cannot take the process down.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			// net/http's way to abort a response on purpose: let it through.
			panic(p)
		}
		s.log.LogAttrs(c.Request.Context(), slog.LevelError, "handler panicked",
			slog.String("request_id", requestID(c)),
			slog.String("route", routeOf(c)),
			slog.String("panic", fmt.Sprint(p)),
			slog.String("stack", string(debug.Stack())))
		if c.Writer.Written() {
			c.Abort()
			return
		}
		c.Writer.Header().Del("Location")
		// Already logged with its stack above: answer without a second line.
		s.respond(c, fmt.Errorf("panic: %v", p), false)
	}()
	c.Next()
}

// bodyLimit caps every request body. A declared length over the cap is
// refused before reading; an undeclared one fails while being read.
func (s *Server) bodyLimit(c *gin.Context) {
	if c.Request.ContentLength > s.cfg.MaxBodyBytes {
		s.writeError(c, apierror.TooLarge(s.cfg.MaxBodyBytes))
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
	c.Next()
}

// limitAnonymous charges an unauthenticated request to its client address
// (the TCP peer: no forwarding header is trusted) and answers 429
// rate_limited with Retry-After when the address is over its budget, before
// the body is read or any work is done.
func (s *Server) limitAnonymous(c *gin.Context) {
	if err := s.cp.AllowAnonymous(c.ClientIP()); err != nil {
		s.writeError(c, err)
		return
	}
	c.Next()
}
