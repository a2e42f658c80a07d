package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// getQuota answers a user's quota and usage: their own for every role, any
// user's for an admin.
func (s *Server) getQuota(c *gin.Context) {
	id, ok := s.userInScope(c)
	if !ok {
		return
	}
	v, err := s.cp.GetQuota(c.Request.Context(), id)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

// setQuota replaces a user's quota. As with a role, every role may update
// its own user record, but only an admin (scope any) sets a quota.
func (s *Server) setQuota(c *gin.Context) {
	id, ok := s.userInScope(c)
	if !ok {
		return
	}
	if scopeOwner(c) != "" {
		s.deny(c, apiError(messages.KindForbidden, "forbidden", "only an admin can set a quota"))
		return
	}
	var q messages.Quota
	if err := decodeJSON(c, &q); err != nil {
		s.writeError(c, err)
		return
	}
	v, err := s.cp.SetQuota(c.Request.Context(), id, q)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}
