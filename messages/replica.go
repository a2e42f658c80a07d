package messages

import "time"

// Join token kinds.
const (
	JoinTokenKindNode    = "node"
	JoinTokenKindReplica = "replica"
)

// CreateClusterJoinTokenRequest is the body of POST /v1/cluster/join-tokens
// (admin). Kind must be "replica"; TTL is as for a node join token.
type CreateClusterJoinTokenRequest struct {
	Kind string `json:"kind"`
	TTL  string `json:"ttl,omitempty"`
}

// Replica is what the control plane records about an otherix-api replica,
// under /otherix/replicas/<name>: written by the join handshake (in the
// transaction that consumes the replica join token) and by the replica
// itself when it starts serving. Its name is its etcd member name.
type Replica struct {
	Name     string `json:"name"`
	PeerURL  string `json:"peer_url"`
	APIURL   string `json:"api_url,omitempty"`
	AgentURL string `json:"agent_url,omitempty"`
	// Version is the otherix-api version the replica last started with.
	Version  string    `json:"version,omitempty"`
	JoinedAt time.Time `json:"joined_at"`
	Revision int64     `json:"revision"`
}

// EntityID implements the store's entity contract: replicas are keyed by name.
func (r *Replica) EntityID() string { return r.Name }

// EntityRevision implements the store's entity contract.
func (r *Replica) EntityRevision() int64 { return r.Revision }

// SetEntityRevision implements the store's entity contract.
func (r *Replica) SetEntityRevision(rev int64) { r.Revision = rev }

// ReplicaJoinRequest is what a new replica POSTs to /v1/cluster/join on an
// existing replica's agent-facing listener, after pinning its CA by the
// token's fingerprint. CSR is the PEM of a request for CN
// otherix-replica-<name> (security.NewReplicaKeyAndCSR); the key stays on
// the joiner. PeerURL is https://HOST:PORT, where the others reach it.
type ReplicaJoinRequest struct {
	Token    string `json:"token"`
	Name     string `json:"name"`
	PeerURL  string `json:"peer_url"`
	CSR      string `json:"csr"`
	APIURL   string `json:"api_url,omitempty"`
	AgentURL string `json:"agent_url,omitempty"`
	// MemberOf, when set, is the cluster id (hex) of the member the
	// joiner's data dir already holds: the request then joins nothing and
	// spends no token; it only checks that the cluster asked is that one
	// (answered with cluster_id alone), or is refused with
	// cluster_mismatch naming both ids.
	MemberOf string `json:"member_of,omitempty"`
	// Version is the joiner's otherix-api version: a joiner more than one
	// minor version from any member is refused with version_skew before
	// the token is spent (internal/versionskew). Empty (a joiner older
	// than this field) is not checked.
	Version string `json:"version,omitempty"`
}

// ReplicaJoinResponse answers a join: the cluster CA, the signed peer
// certificate, the etcd initial-cluster string to start with
// (initial-cluster-state=existing) and the cluster id (hex) the new member
// must find itself in.
type ReplicaJoinResponse struct {
	CA             string `json:"ca"`          // PEM
	Certificate    string `json:"certificate"` // PEM
	InitialCluster string `json:"initial_cluster"`
	ClusterID      string `json:"cluster_id"`
	MemberID       string `json:"member_id"`
}

// ClusterMember is one item of GET /v1/cluster/members.
type ClusterMember struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	Role     string `json:"role"` // voter | learner
	IsLeader bool   `json:"is_leader"`
	Healthy  bool   `json:"healthy"`
	APIURL   string `json:"api_url"`
	AgentURL string `json:"agent_url"`
	PeerURL  string `json:"peer_url"`
	// LoopOwner marks the replica that runs the cluster-wide periodic
	// loops now (persistence/election).
	LoopOwner bool `json:"loop_owner"`
	// Note explains a state, such as a learner held back to keep an odd
	// number of voters.
	Note string `json:"note,omitempty"`
	// RaftIndexLag is how many Raft log entries the member is behind the
	// leader's commit index; null when the answering replica cannot tell
	// (a follower knows only its own).
	RaftIndexLag *uint64 `json:"raft_index_lag"`
	// Version is the otherix-api version the replica recorded when it
	// last started serving; EtcdVersion the etcd version its peer
	// listener answers.
	Version     string `json:"version,omitempty"`
	EtcdVersion string `json:"etcd_version,omitempty"`
}

// RemovedClusterMember answers DELETE /v1/cluster/members/{name}: the
// member as it was listed just before its removal.
type RemovedClusterMember struct {
	Member ClusterMember `json:"member"`
}

// ClusterEndpoints answers GET /v1/cluster/endpoints (any authenticated
// caller): the API URLs of the replicas that serve (voters that recorded
// one), so that a client can fail over between them. Nothing else about the
// replicas is shown to non-admins.
type ClusterEndpoints struct {
	APIURLs []string `json:"api_urls"`
}
