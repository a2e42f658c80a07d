package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// Context keys set by the guards.
const (
	ctxPrincipal  = "otherix.principal"
	ctxScopeOwner = "otherix.scope_owner"
	// ctxDenied marks a request refused by authentication or authorization,
	// which the audit records whatever its method.
	ctxDenied = "otherix.denied"
	// ctxErrorCode is the envelope code answered, for the audit's result.
	ctxErrorCode = "otherix.error_code"
)

// anonymousActor is the audit actor of a request with no principal.
const anonymousActor = "anonymous"

// errUnauthenticated is the one answer to a missing, malformed, expired,
// revoked or wrongly signed token: which of these it was stays in the server,
// so a client probing tokens learns nothing.
var errUnauthenticated = apiError(messages.KindUnauthenticated, "unauthenticated",
	"a valid bearer token is required; log in again")

// authenticate resolves Authorization: Bearer <token> to a principal, or
// answers 401. The token is never logged or echoed.
func (s *Server) authenticate(c *gin.Context) {
	p, err := s.principal(c)
	switch {
	case err == nil && p != nil && p.UserID != "":
	case err == nil, messages.KindOf(err) == messages.KindUnauthenticated:
		s.deny(c, errUnauthenticated)
		return
	default:
		// etcd down or a timeout is not the caller's fault: 503, not 401,
		// so a client does not throw away a good token.
		s.writeError(c, err)
		return
	}
	c.Set(ctxPrincipal, p)
	c.Next()
}

// bearerPrincipal resolves Authorization: Bearer <token> to a principal. A
// missing or malformed header is errUnauthenticated, like a token the control
// plane refuses.
func (s *Server) bearerPrincipal(c *gin.Context) (*messages.Principal, error) {
	bearer, ok := bearerToken(c.GetHeader("Authorization"))
	if !ok {
		return nil, errUnauthenticated
	}
	return s.cp.Authenticate(c.Request.Context(), bearer)
}

// bearerToken extracts the token of an Authorization header. The scheme is
// case-insensitive (RFC 9110 §11.1); the token must be one non-empty word.
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// authorize applies the matrix cell of r to the principal's role and stores
// the owner scope handlers pass to the control plane.
func (s *Server) authorize(r route) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := principalOf(c)
		// The caller travels with the request: an any-owner scope still
		// resolves names to the caller's own resources first.
		c.Request = c.Request.WithContext(messages.WithCaller(c.Request.Context(), p.UserID))
		switch security.Allowed(security.Role(p.Role), r.resource, r.verb) {
		case security.ScopeAny:
			c.Set(ctxScopeOwner, "")
		case security.ScopeOwn:
			c.Set(ctxScopeOwner, p.UserID)
		default:
			if r.hideDenied {
				s.deny(c, messages.NotFound(r.resource, c.Param("id")))
				return
			}
			s.deny(c, errForbidden)
			return
		}
		c.Next()
	}
}

var errForbidden = apiError(messages.KindForbidden, "forbidden", "your role does not allow this")

// deny answers a refused request and marks it for the audit.
func (s *Server) deny(c *gin.Context, err error) {
	c.Set(ctxDenied, true)
	s.writeError(c, err)
}

// principalOf is who the request acts for; nil on a public route.
func principalOf(c *gin.Context) *messages.Principal {
	v, ok := c.Get(ctxPrincipal)
	if !ok {
		return nil
	}
	p, _ := v.(*messages.Principal)
	return p
}

// errNoScope guards a handler registered without authorize: it must fail
// closed, never fall back to "" (every owner).
var errNoScope = errors.New("server: route has no authorization scope")

// scopeOwner is the owner argument for the control plane: the principal's id
// when its role has own scope, "" when it has any scope. It panics (a 500)
// on a route that skipped authorize rather than widen the scope.
func scopeOwner(c *gin.Context) string {
	v, ok := c.Get(ctxScopeOwner)
	if !ok {
		panic(errNoScope)
	}
	return v.(string)
}

// ownerOf is whose request this is: the principal's user id. It keys the
// idempotency records and owns what a create makes.
func ownerOf(c *gin.Context) string {
	if p := principalOf(c); p != nil {
		return p.UserID
	}
	return anonymousActor
}

// writeMethods are audited whenever they complete.
var writeMethods = map[string]bool{http.MethodPost: true, http.MethodPatch: true, http.MethodPut: true, http.MethodDelete: true}

// audit records every denied request and every finished write on a known
// route. Bodies, headers and tokens are never part of an entry.
func (s *Server) audit(c *gin.Context) {
	c.Next()
	route := c.FullPath()
	if route == "" || !(c.GetBool(ctxDenied) || writeMethods[c.Request.Method]) {
		return
	}
	if isDryRun(c) && !c.GetBool(ctxDenied) && !c.GetBool(ctxOutOfScope) {
		// A dry run changed nothing: audited only when it was a denial.
		return
	}
	status := c.Writer.Status()
	result := "ok"
	if status >= http.StatusBadRequest {
		result = c.GetString(ctxErrorCode)
		if result == "" {
			result = http.StatusText(status)
		}
	}
	if c.GetBool(ctxOutOfScope) { // errors.go: a hidden resource is a denial
		result = "denied"
	}
	actor := anonymousActor
	if p := principalOf(c); p != nil {
		actor = p.UserID
	}
	s.cp.Audit(messages.AuditEntry{
		Time:      s.now().UTC(),
		Actor:     actor,
		Action:    c.Request.Method + " " + route,
		Target:    auditTarget(c),
		Result:    result,
		Source:    c.ClientIP(),
		RequestID: requestID(c),
	})
}
