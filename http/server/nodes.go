package server

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// pemContentType is the media type of the cluster CA certificate.
const pemContentType = "application/x-pem-file"

// caPEM answers the cluster CA certificate. It is public on both listeners:
// a CA certificate is no secret, and agents and CLIs pin it by fingerprint.
func (s *Server) caPEM(c *gin.Context) {
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, pemContentType, s.cp.CAPEM())
}

func (s *Server) listNodes(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	nodes, next, err := s.cp.ListNodes(lctx, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(nodes, next).at(rr))
}

func (s *Server) getNode(c *gin.Context) {
	n, err := s.cp.GetNode(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusOK, n)
}

func (s *Server) cordonNode(c *gin.Context)   { s.setCordoned(c, s.cp.Cordon) }
func (s *Server) uncordonNode(c *gin.Context) { s.setCordoned(c, s.cp.Uncordon) }

func (s *Server) setCordoned(c *gin.Context, set func(context.Context, string) (*messages.Node, error)) {
	n, err := set(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusOK, n)
}

// deleteNode removes a node; ?force=true deletes it even with VMs placed on it.
func (s *Server) deleteNode(c *gin.Context) {
	force, err := boolQuery(c, "force")
	if err != nil {
		s.writeError(c, err)
		return
	}
	if err := s.cp.DeleteNode(c.Request.Context(), c.Param("name"), force); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// createJoinToken mints a one-time join token; the answer is the only place
// the token appears, so no cache may keep it and no idempotency record may
// store it (the route is secret()).
func (s *Server) createJoinToken(c *gin.Context) {
	var req messages.CreateJoinTokenRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	setAuditTarget(c, req.NodeName)
	tok, err := s.cp.CreateJoinToken(c.Request.Context(), *principalOf(c), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	// The token's id: what a revoke names later.
	setAuditTarget(c, tok.JoinToken.ID)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, tok)
}

func (s *Server) listJoinTokens(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	tokens, next, err := s.cp.ListJoinTokens(lctx, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(tokens, next).at(rr))
}

func (s *Server) revokeJoinToken(c *gin.Context) {
	if err := s.cp.RevokeJoinToken(c.Request.Context(), c.Param("id")); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
