package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// createNetwork answers 201 with the network, synchronously: creating one is
// a single etcd transaction and touches no node (agents learn of it from the
// desired state in their next heartbeat), so there is no task to wait for.
func (s *Server) createNetwork(c *gin.Context) {
	var req messages.CreateNetworkRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	n, err := s.cp.CreateNetwork(c.Request.Context(), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Location", "/v1/networks/"+n.Name)
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusCreated, n)
}

func (s *Server) listNetworks(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	nets, next, err := s.cp.ListNetworks(c.Request.Context(), page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(nets, next))
}

func (s *Server) getNetwork(c *gin.Context) {
	n, err := s.cp.GetNetwork(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusOK, n)
}

// deleteNetwork removes a network; 409 network_in_use while VMs are attached.
func (s *Server) deleteNetwork(c *gin.Context) {
	if err := s.cp.DeleteNetwork(c.Request.Context(), c.Param("name")); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
