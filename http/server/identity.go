package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// login exchanges an email and password for a token pair. The body is
// decoded here and handed on; it is never logged, stored for idempotency or
// echoed in an error.
func (s *Server) login(c *gin.Context) {
	var req messages.LoginRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	pair, err := s.cp.Login(c.Request.Context(), req, c.ClientIP())
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeTokens(c, pair)
}

// refresh rotates a refresh token into a new pair.
func (s *Server) refresh(c *gin.Context) {
	var req messages.RefreshRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	pair, err := s.cp.Refresh(c.Request.Context(), req.RefreshToken, c.ClientIP())
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeTokens(c, pair)
}

// writeTokens answers a token pair; no cache may keep it (RFC 6749 §5.1).
func writeTokens(c *gin.Context, pair *messages.TokenPair) {
	c.Header("Cache-Control", "no-store")
	c.Header("Pragma", "no-cache")
	c.JSON(http.StatusOK, pair)
}

// logout revokes the session (refresh family) the body's token belongs to.
func (s *Server) logout(c *gin.Context) {
	var req messages.RefreshRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	if err := s.cp.Logout(c.Request.Context(), req.RefreshToken); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) listUsers(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	users, next, err := s.cp.ListUsers(lctx, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(users, next).at(rr))
}

func (s *Server) createUser(c *gin.Context) {
	var req messages.CreateUserRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	u, err := s.cp.CreateUser(c.Request.Context(), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Location", "/v1/users/"+u.ID)
	c.JSON(http.StatusCreated, u)
}

func (s *Server) getMe(c *gin.Context) {
	u, err := s.cp.GetUser(c.Request.Context(), principalOf(c).UserID)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, u)
}

func (s *Server) updateMe(c *gin.Context) {
	var req messages.UpdateMeRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	u, err := s.cp.UpdateMe(c.Request.Context(), *principalOf(c), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, u)
}

// userInScope answers 404 for a user outside the caller's scope: with own
// scope, every user but oneself is hidden. The answer wraps
// messages.ErrOutOfScope, so the attempt is audited as a denial.
func (s *Server) userInScope(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if owner := scopeOwner(c); owner != "" && owner != id {
		s.writeError(c, messages.OutOfScope("users", id))
		return "", false
	}
	return id, true
}

func (s *Server) getUser(c *gin.Context) {
	id, ok := s.userInScope(c)
	if !ok {
		return
	}
	u, err := s.cp.GetUser(c.Request.Context(), id)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, u)
}

// setRole changes a user's role. The matrix gives every role "update" on its
// own user record; changing a role needs scope any, which only admin has.
func (s *Server) setRole(c *gin.Context) {
	id, ok := s.userInScope(c)
	if !ok {
		return
	}
	if scopeOwner(c) != "" {
		s.deny(c, apiError(messages.KindForbidden, "forbidden", "only an admin can change a role"))
		return
	}
	var req messages.SetRoleRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	u, err := s.cp.SetRole(c.Request.Context(), id, req.Role)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, u)
}

func (s *Server) deleteUser(c *gin.Context) {
	id, ok := s.userInScope(c)
	if !ok {
		return
	}
	if err := s.cp.DeleteUser(c.Request.Context(), id); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// listTokens lists the caller's tokens; an admin adds ?all=true for every
// user's.
func (s *Server) listTokens(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	all, err := boolQuery(c, "all")
	if err != nil {
		s.writeError(c, err)
		return
	}
	owner := principalOf(c).UserID
	if all {
		if scopeOwner(c) != "" {
			s.deny(c, apiError(messages.KindForbidden, "forbidden", "only an admin can list every user's tokens"))
			return
		}
		owner = ""
	}
	lctx, rr := listContext(c)
	tokens, next, err := s.cp.ListAPITokens(lctx, owner, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(tokens, next).at(rr))
}

// createToken mints an API token for the caller, with the caller's role or a
// lower one. The control plane enforces the cap too; checking it here keeps
// the refusal a 403 whatever the layer below calls it.
func (s *Server) createToken(c *gin.Context) {
	var req messages.CreateAPITokenRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	p := principalOf(c)
	if r := security.Role(req.Role); req.Role != "" && r.Valid() && !r.AtMost(security.Role(p.Role)) {
		s.deny(c, apiError(messages.KindForbidden, "forbidden", "a token's role cannot exceed your own (%s)", p.Role))
		return
	}
	tok, err := s.cp.CreateAPIToken(c.Request.Context(), *p, req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Header("Location", "/v1/tokens/"+tok.APIToken.ID)
	c.JSON(http.StatusCreated, tok)
}

func (s *Server) revokeToken(c *gin.Context) {
	if err := s.cp.RevokeAPIToken(c.Request.Context(), scopeOwner(c), c.Param("id")); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) listAudit(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	entries, next, err := s.cp.ListAudit(lctx, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(entries, next).at(rr))
}
