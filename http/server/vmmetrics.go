package server

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// maxTopLimit is the most VMs GET /v1/top/vms answers.
const maxTopLimit = 200

// topVMsList and topNodesList are the top answers: one page, no cursor.
type topVMsList struct {
	Items []messages.VMMetricsView `json:"items"`
}

type topNodesList struct {
	Items []messages.NodeTop `json:"items"`
}

func (s *Server) vmMetrics(c *gin.Context) {
	v, err := s.cp.VMMetrics(c.Request.Context(), scopeOwner(c), c.Param("id"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

// topVMs answers the busiest VMs in the caller's scope; ?limit= is 1 to 200.
func (s *Server) topVMs(c *gin.Context) {
	limit := 0
	if v, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxTopLimit {
			s.writeError(c, apiError(messages.KindInvalid, "invalid_limit", "limit must be an integer from 1 to %d", maxTopLimit).
				WithDetail("max", maxTopLimit))
			return
		}
		limit = n
	}
	items, err := s.cp.TopVMs(c.Request.Context(), scopeOwner(c), limit)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if items == nil {
		items = []messages.VMMetricsView{}
	}
	c.JSON(http.StatusOK, topVMsList{Items: items})
}

func (s *Server) topNodes(c *gin.Context) {
	items, err := s.cp.TopNodes(c.Request.Context())
	if err != nil {
		s.writeError(c, err)
		return
	}
	if items == nil {
		items = []messages.NodeTop{}
	}
	c.JSON(http.StatusOK, topNodesList{Items: items})
}
