package server

import (
	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// restWithoutQuorum are the REST routes a replica without quorum still
// serves, because they need nothing that takes consensus: the probes
// (/readyz says no_quorum itself), the contract, the CA, the version, the
// console page's static code, metrics, and the member list, which reads
// this member's own copy of the membership (its authentication still needs
// the store, so it answers only to credentials that do not). Every other
// route answers 503 no_quorum at once: writes cannot commit, and reads,
// whether from etcd or from an actor's memory, could be older than what
// the majority has acknowledged since.
var restWithoutQuorum = map[string]bool{
	"/healthz": true, "/readyz": true, "/metrics": true, "/openapi.yaml": true,
	"/v1/ca": true, "/v1/version": true, "/ui/vms/:name/console": true, "/ui/assets/*path": true,
	"/ui": true, "/ui/": true,
	"/v1/cluster/members": true,
}

// agentWithoutQuorum are the agent listener's routes served without
// quorum: the CA only. A heartbeat is refused with no_quorum rather than
// answered from memory, so that the agent turns to a replica that has
// quorum instead of applying a desired state that may be stale, and so
// that nothing is recorded of a heartbeat that could not be written.
var agentWithoutQuorum = map[string]bool{"/v1/ca": true}

// quorumGate answers 503 no_quorum, before authentication or any store
// access, on a route not in served while this replica's member knows no
// leader (Config.HasQuorum). Requests already under way when the leader is
// lost fail as fast: the store binds every call needing consensus to the
// quorum (store.WithQuorum).
func (s *Server) quorumGate(served map[string]bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		has := s.cfg.HasQuorum
		if has == nil || has() {
			c.Next()
			return
		}
		route := c.FullPath()
		if route == "" || served[route] {
			// No route matched: the 404 or 405 needs no store either.
			c.Next()
			return
		}
		c.Header("Retry-After", "1")
		s.writeError(c, messages.ErrNoQuorum)
	}
}

// AgentOption tunes NewAgentAPI.
type AgentOption func(*agentOptions)

type agentOptions struct {
	hasQuorum func() bool
	replica   string // AgentReplica
}

// AgentQuorum has the agent listener refuse heartbeats, enrollments,
// renewals and replica joins with 503 no_quorum while has reports false
// (Config.HasQuorum for the REST API).
func AgentQuorum(has func() bool) AgentOption {
	return func(o *agentOptions) { o.hasQuorum = has }
}
