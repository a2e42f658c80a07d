package server

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/messages"
)

// AgentMaxBodyBytes caps a request body on the agent-facing listener: an
// enrollment request is a CSR and a few names. Heartbeats, which grow with
// the node's VMs and images, have their own limit,
// messages.HeartbeatMaxBytes.
const AgentMaxBodyBytes = 64 << 10

// NewAgentAPI is the handler of the agent-facing HTTPS listener: GET /v1/ca
// (the cluster CA, for trust on first use) and POST /v1/enroll (a join token
// and a CSR for a node certificate). It shares the main API's request ids,
// access log, body limit, recovery and error envelope, but not its routes,
// authentication or metrics: agents authenticate with join tokens here and,
// later, with their certificates.
func NewAgentAPI(cp ControlPlane, log *slog.Logger, opts ...AgentOption) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o agentOptions
	for _, f := range opts {
		f(&o)
	}
	// The listener-wide limit is the heartbeat's (the largest); each
	// route narrows it. Anonymous routes keep 64 KiB, and a heartbeat
	// without a client certificate is refused before its body is read.
	s := &Server{cfg: Config{MaxBodyBytes: messages.HeartbeatMaxBytes, HasQuorum: o.hasQuorum}.withDefaults(), cp: cp,
		log: log.With("listener", "agent"), now: time.Now, agentReplica: o.replica}
	small := s.routeBodyLimit(AgentMaxBodyBytes)
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.HandleMethodNotAllowed = true
	_ = e.SetTrustedProxies(nil)
	e.Use(requestIDMiddleware, s.observe, s.recovery, s.bodyLimit, s.quorumGate(agentWithoutQuorum))
	e.NoRoute(func(c *gin.Context) {
		s.writeError(c, apiError(kindRouteNotFound, "route_not_found", "no route for %s %s", c.Request.Method, c.Request.URL.Path))
	})
	e.NoMethod(func(c *gin.Context) {
		s.writeError(c, apiError(kindMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path).
			WithDetail("allow", c.Writer.Header().Get("Allow")))
	})
	// Enrollment and the CA are open to anyone who reaches the listener,
	// renewal to any holder of a node certificate: each is charged to the
	// client address like the main listener's public routes, and keeps the
	// small body limit. Heartbeats are not charged: every node sends them,
	// and a limit there would only take nodes behind one address out of
	// the cluster.
	e.GET("/v1/ca", s.limitAnonymous, s.caPEM)
	e.POST("/v1/enroll", s.limitAnonymous, small, s.enroll)
	e.POST("/v1/heartbeat", s.heartbeat)
	e.POST("/v1/renew", s.limitAnonymous, small, s.renew)
	e.POST("/v1/cluster/join", s.limitAnonymous, small, s.joinReplica)
	e.GET("/v1/cluster/node-metrics", s.heldNodeMetrics)
	s.engine = e
	return e
}

// routeBodyLimit narrows the listener's body limit for one route, the same
// way bodyLimit applies it: a declared length over it is refused before
// reading, an undeclared one fails while being read.
func (s *Server) routeBodyLimit(limit int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > limit {
			s.writeError(c, apierror.TooLarge(limit))
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		c.Next()
	}
}

// enroll consumes a join token and answers the node's certificate. The body
// holds the token, so it is never logged; refusals carry the control plane's
// codes (invalid_join_token, node_name_not_allowed, node_name_conflict,
// csr_policy).
func (s *Server) enroll(c *gin.Context) {
	var req messages.EnrollRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	resp, err := s.cp.Enroll(c.Request.Context(), req, c.ClientIP())
	if err != nil {
		if k := messages.KindOf(err); k != messages.KindInternal && k != messages.KindUnavailable {
			s.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "enrollment refused",
				slog.String("request_id", requestID(c)), slog.String("node", req.Name),
				slog.String("source", c.ClientIP()), slog.String("reason", errCode(err)))
		}
		s.writeError(c, err)
		return
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "node enrolled",
		slog.String("request_id", requestID(c)), slog.String("node", resp.Node.Name),
		slog.String("source", c.ClientIP()), slog.String("cert_fingerprint", resp.Node.CertFingerprint))
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
}

// heartbeat records an agent's observed state. The TLS layer verified the
// client certificate's chain if one was given; one is required here, and the
// control plane checks that it is the certificate recorded for the node. The
// body is decoded strictly: an agent newer than the control plane is refused
// with unknown_field naming the field, so upgrades go control plane first.
func (s *Server) heartbeat(c *gin.Context) {
	if c.Request.TLS == nil || len(c.Request.TLS.PeerCertificates) == 0 {
		s.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "heartbeat refused",
			slog.String("request_id", requestID(c)), slog.String("node", ""),
			slog.String("source", c.ClientIP()), slog.String("reason", "client_certificate_required"))
		s.writeError(c, messages.Errorf(messages.KindUnauthenticated, "client_certificate_required",
			"a heartbeat must present the node's client certificate"))
		return
	}
	cert := c.Request.TLS.PeerCertificates[0]
	var hb messages.Heartbeat
	if err := decodeJSON(c, &hb); err != nil {
		s.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "heartbeat refused",
			slog.String("request_id", requestID(c)), slog.String("node", cert.Subject.CommonName),
			slog.String("source", c.ClientIP()), slog.String("reason", errCode(err)), slog.String("err", err.Error()))
		s.writeError(c, err)
		return
	}
	resp, err := s.cp.Heartbeat(c.Request.Context(), cert, hb)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

// renew signs a new certificate for the node whose current certificate the
// TLS layer verified, for a key the node generated (the CSR's).
func (s *Server) renew(c *gin.Context) {
	if c.Request.TLS == nil || len(c.Request.TLS.PeerCertificates) == 0 {
		s.writeError(c, messages.Errorf(messages.KindUnauthenticated, "client_certificate_required",
			"a renewal must present the node's current client certificate"))
		return
	}
	cert := c.Request.TLS.PeerCertificates[0]
	var req messages.RenewRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	resp, err := s.cp.RenewNodeCert(c.Request.Context(), cert, req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "node certificate renewed",
		slog.String("request_id", requestID(c)), slog.String("node", cert.Subject.CommonName),
		slog.String("source", c.ClientIP()))
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
}

// errCode is the envelope code err would answer with.
func errCode(err error) string {
	e, rule := classify(err)
	if rule.code != "" {
		return rule.code
	}
	return e.Code
}
