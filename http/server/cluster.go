package server

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// createClusterJoinToken mints a replica join token; like a node join
// token, the answer is the only place it appears (the route is secret()).
func (s *Server) createClusterJoinToken(c *gin.Context) {
	var req messages.CreateClusterJoinTokenRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	tok, err := s.cp.CreateClusterJoinToken(c.Request.Context(), *principalOf(c), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	setAuditTarget(c, tok.JoinToken.ID)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, tok)
}

// listClusterMembers answers every replica (a handful: one page).
func (s *Server) listClusterMembers(c *gin.Context) {
	ms, err := s.cp.ClusterMembers(c.Request.Context())
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(ms, ""))
}

// removeClusterMember takes a replica out of the cluster; ?force=true
// skips the healthy-quorum check (never the last-voter one).
func (s *Server) removeClusterMember(c *gin.Context) {
	force, err := boolQuery(c, "force")
	if err != nil {
		s.writeError(c, err)
		return
	}
	ref := c.Param("name")
	setAuditTarget(c, ref)
	m, err := s.cp.RemoveClusterMember(c.Request.Context(), ref, force)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, messages.RemovedClusterMember{Member: *m})
}

// joinReplica is the join handshake on the agent listener: anonymous and
// rate-limited like enrollment; the body holds the token, so it is never
// logged. Refusals: invalid_join_token, invalid_name, invalid_peer_url,
// replica_name_conflict, peer_url_conflict, csr_policy,
// peer_listener_required; member_add_failed when etcd refused the add
// after the token was spent; cluster_mismatch when a joiner whose data dir
// holds a member (member_of) asks the wrong cluster.
func (s *Server) joinReplica(c *gin.Context) {
	var req messages.ReplicaJoinRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	resp, err := s.cp.JoinReplica(c.Request.Context(), req, c.ClientIP())
	if err != nil {
		if k := messages.KindOf(err); k != messages.KindInternal && k != messages.KindUnavailable {
			s.log.LogAttrs(c.Request.Context(), slog.LevelWarn, "replica join refused",
				slog.String("request_id", requestID(c)), slog.String("replica", req.Name),
				slog.String("source", c.ClientIP()), slog.String("reason", errCode(err)))
		}
		s.writeError(c, err)
		return
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "replica joined",
		slog.String("request_id", requestID(c)), slog.String("replica", req.Name),
		slog.String("source", c.ClientIP()), slog.String("member_id", resp.MemberID))
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, resp)
}

// listClusterEndpoints answers the replicas' API URLs to any authenticated
// caller, so that every client can fail over, not only admins.
func (s *Server) listClusterEndpoints(c *gin.Context) {
	e, err := s.cp.ClusterEndpoints(c.Request.Context())
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, e)
}
