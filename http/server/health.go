package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/api/openapi"
	"github.com/otherix/otherix/messages"
)

// readyTimeout bounds a readiness probe: a probe that hangs is a failed probe.
const readyTimeout = 2 * time.Second

// healthz answers whenever the process serves HTTP: it is liveness, and must
// not depend on etcd, or a slow etcd would get every replica restarted.
func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyz reports whether this replica should receive traffic.
func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
	defer cancel()
	if err := s.cp.Ready(ctx); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "not ready", slog.String("request_id", requestID(c)), slog.Any("error", err))
		// The reason stays in the log: probes are often anonymous.
		s.writeError(c, apiError(messages.KindUnavailable, "not_ready", "the control plane is not ready"))
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}

// openapi serves the contract the API is tested against.
func (s *Server) openapi(c *gin.Context) {
	c.Data(http.StatusOK, "application/yaml", openapi.ControlPlane)
}
