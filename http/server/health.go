package server

import (
	"encoding/json"

	"context"
	"github.com/otherix/otherix/http/apierror"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/api/openapi"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
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
	err := s.cp.Ready(ctx)
	if err == nil && s.cfg.HasQuorum != nil && !s.cfg.HasQuorum() {
		err = messages.ErrNoQuorum
	}
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "not ready", slog.String("request_id", requestID(c)), slog.Any("error", err))
		// The cause stays in the log: probes are often anonymous. A lost
		// quorum is named, as a learner is (NotServing): it says what the
		// replica waits for, and tells a load balancer why.
		if store.IsNoQuorum(err) {
			s.writeError(c, apiError(messages.KindUnavailable, "not_ready", "this replica has no quorum").
				WithDetail("reason", messages.ErrNoQuorum.Code))
			return
		}
		s.writeError(c, apiError(messages.KindUnavailable, "not_ready", "the control plane is not ready"))
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}

// openapi serves the contract the API is tested against.
func (s *Server) openapi(c *gin.Context) {
	c.Data(http.StatusOK, "application/yaml", openapi.ControlPlane)
}

// NotServing is the REST handler of a replica that must serve nothing yet
// (an etcd learner: our in-process etcd client would bypass etcd's own
// learner guard). /healthz answers, since the process is alive; /readyz
// and every other route answer 503 not_ready with the reason, which is
// not a secret: it says what the replica waits for.
func NotServing(reason, message string) http.Handler {
	body, _ := json.Marshal(apierror.NewBody("not_ready", message, map[string]any{"reason": reason}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = w.Write([]byte(`{"status":"ok"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(body)
	})
}
