//go:build !noauth

package server

import (
	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// noAuthBuild reports whether this binary was built with -tags noauth (see
// auth_noauth.go). It is false in every real build.
const noAuthBuild = false

// principalFromRequest resolves Authorization: Bearer <token> to a
// principal. A missing or malformed header is errUnauthenticated, like a
// token the control plane refuses.
func (s *Server) principalFromRequest(c *gin.Context) (*messages.Principal, error) {
	bearer, ok := bearerToken(c.GetHeader("Authorization"))
	if !ok {
		return nil, errUnauthenticated
	}
	return s.cp.Authenticate(c.Request.Context(), bearer)
}
