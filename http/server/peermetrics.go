package server

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// HeldMetricsReader answers another replica's question for the VM samples
// this replica holds in memory (actors/gateway.Gateway.HeldNodeMetrics).
type HeldMetricsReader interface {
	HeldNodeMetrics(node string) []messages.HeldNodeMetrics
}

// AgentReplica names this replica in the answers of
// GET /v1/cluster/node-metrics.
func AgentReplica(name string) AgentOption {
	return func(o *agentOptions) { o.replica = name }
}

// heldNodeMetrics serves GET /v1/cluster/node-metrics[?node=ID] on the
// agent listener: the VM samples of the heartbeats this replica received,
// for the other replicas, so that each answers the metrics and tops of
// every node whichever replica the node heartbeats. Only a replica peer
// certificate of the cluster CA may ask (the TLS layer verified the chain;
// the CN and the marker SAN are checked here): samples name VMs of every
// owner, and RBAC is applied by the asking replica to its own caller.
func (s *Server) heldNodeMetrics(c *gin.Context) {
	if c.Request.TLS == nil || len(c.Request.TLS.VerifiedChains) == 0 {
		s.writeError(c, messages.Errorf(messages.KindUnauthenticated, "client_certificate_required",
			"node metrics are for replicas: present this cluster's replica peer certificate"))
		return
	}
	peer, err := security.ReplicaNameFromCert(c.Request.TLS.PeerCertificates[0])
	if err != nil {
		s.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "node metrics refused",
			slog.String("request_id", requestID(c)), slog.String("cn", c.Request.TLS.PeerCertificates[0].Subject.CommonName),
			slog.String("source", c.ClientIP()), slog.String("reason", security.ReasonNotReplicaCert))
		s.writeError(c, messages.Errorf(messages.KindForbidden, security.ReasonNotReplicaCert,
			"node metrics are for replicas; this certificate is not a replica peer certificate"))
		return
	}
	node := c.Query("node")
	if node != "" && !messages.ValidID(node) {
		s.writeError(c, messages.Errorf(messages.KindInvalid, "invalid_node", "node must be a node id").WithDetail("field", "node"))
		return
	}
	r, ok := s.cp.(HeldMetricsReader)
	if !ok {
		s.writeError(c, apiError(kindRouteNotFound, "route_not_found", "this server holds no node metrics"))
		return
	}
	items := r.HeldNodeMetrics(node)
	if items == nil {
		items = []messages.HeldNodeMetrics{}
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelDebug, "node metrics asked", slog.String("peer", peer), slog.Int("nodes", len(items)))
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, messages.HeldNodeMetricsList{Replica: s.agentReplica, Items: items})
}
