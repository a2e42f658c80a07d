package messages

import (
	"encoding/base64"
	"net/netip"
	"net/url"
	"time"
)

// Node phases, moved by enrollment, heartbeats and the liveness loop.
const (
	NodePending     = "pending"     // enrolled, no heartbeat yet
	NodeReady       = "ready"       // heartbeating
	NodeUnreachable = "unreachable" // missed heartbeats
	NodeGone        = "gone"        // unreachable for longer than the gone period
)

// WireGuardListenPort is the default of the settings' wireguard_port, the
// UDP port of every node's WireGuard listener sent down as
// DesiredOverlay.ListenPort; the agent's netfabric defaults to the same port
// (netfabric.DefaultListenPort).
const WireGuardListenPort = 51820

// Node is an enrolled hypervisor host.
type Node struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// CertFingerprint is the SHA-256 of the certificate issued at enrollment;
	// the agent-facing listener accepts only the certificate it names.
	CertFingerprint string `json:"cert_fingerprint"`
	// PrevCertFingerprint is the certificate a renewal replaced; it is
	// accepted until the agent first presents the new one.
	PrevCertFingerprint string    `json:"prev_cert_fingerprint,omitempty"`
	CertNotAfter        time.Time `json:"cert_not_after"`
	Phase               string    `json:"phase"`
	Cordoned            bool      `json:"cordoned"`
	Arch                string    `json:"arch,omitempty"`
	AgentVersion        string    `json:"agent_version,omitempty"`
	// Endpoint is the agent's own mTLS API (https://host:port) from its last
	// heartbeat; the control plane calls it to run VM tasks.
	Endpoint string `json:"endpoint,omitempty"`
	// TunnelIP is the node's address in the WireGuard mesh, a host address
	// of the settings' overlay supernet (the agent gives its interface the
	// supernet's prefix length). It is allocated, once and for the node's
	// lifetime, when the node first reports an overlay key, under the guard
	// uniq/nodes/tunnel_ip/<ip>, and freed when the node is deleted.
	TunnelIP string `json:"tunnel_ip,omitempty"`
	// Status is the last observed state; the API view merges the node actor's
	// in-memory copy, which is fresher than the row between changes.
	Status     NodeStatus `json:"status"`
	EnrolledAt time.Time  `json:"enrolled_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	Revision   int64      `json:"revision"`
}

// EntityID implements the store's entity contract.
func (n *Node) EntityID() string { return n.ID }

// EntityRevision implements the store's entity contract.
func (n *Node) EntityRevision() int64 { return n.Revision }

// SetEntityRevision implements the store's entity contract.
func (n *Node) SetEntityRevision(r int64) { n.Revision = r }

// JoinToken is a one-time, expiring permission to enroll one node. Only the
// hash of its secret is stored.
type JoinToken struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
	// Kind is JoinTokenKindNode (empty in rows written before replicas
	// existed) or JoinTokenKindReplica. Both kinds share the key family
	// /otherix/jointokens/<id>; ids are random, so they never collide.
	Kind      string    `json:"kind,omitempty"`
	NodeName  string    `json:"node_name,omitempty"` // when set, the only name it may enroll
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Revision  int64     `json:"revision"`
}

// EntityID implements the store's entity contract.
func (j *JoinToken) EntityID() string { return j.ID }

// EntityRevision implements the store's entity contract.
func (j *JoinToken) EntityRevision() int64 { return j.Revision }

// SetEntityRevision implements the store's entity contract.
func (j *JoinToken) SetEntityRevision(r int64) { j.Revision = r }

// JoinTokenView is the API form of a join token: no hash.
type JoinTokenView struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	NodeName  string    `json:"node_name,omitempty"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateJoinTokenRequest is the body of POST /v1/nodes/join-tokens (admin).
// TTL is a Go duration ("1h" by default, at most 24h).
type CreateJoinTokenRequest struct {
	TTL      string `json:"ttl,omitempty"`
	NodeName string `json:"node_name,omitempty"`
}

// CreatedJoinToken answers POST /v1/nodes/join-tokens: the only time the token
// (otxj_<id>.<secret>@<ca fingerprint>) is shown.
type CreatedJoinToken struct {
	Token     string        `json:"token"`
	JoinToken JoinTokenView `json:"join_token"`
}

// EnrollRequest is what otherix-agent bootstrap POSTs to /v1/enroll on the
// agent-facing listener. CSR is the PEM of a certificate request whose CN is
// node-<name>; the key never leaves the node.
type EnrollRequest struct {
	Token        string `json:"token"`
	Name         string `json:"name"`
	CSR          string `json:"csr"`
	Arch         string `json:"arch,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// EnrollResponse carries the node's certificate and the cluster CA.
type EnrollResponse struct {
	Node              Node   `json:"node"`
	Certificate       string `json:"certificate"` // PEM
	CA                string `json:"ca"`          // PEM
	HeartbeatInterval string `json:"heartbeat_interval"`
}

// ValidateEndpoint checks an agent API endpoint: an https URL with a host and
// nothing after it but an optional path prefix.
func ValidateEndpoint(field, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Invalid(field, "must be an https URL such as https://host:port")
	}
	return nil
}

// ValidateNodeOverlay checks the overlay a heartbeat reports. The control
// plane hands every node's key and endpoint to every other node, so one
// malformed value would break the reconcile of the whole mesh: it is refused
// at the door. An empty key is a node whose data plane has no key yet; an
// empty endpoint a node that knows no underlay address (it gets its overlay
// but is no other node's peer).
func ValidateNodeOverlay(o *NodeOverlay) error {
	if o == nil {
		return nil
	}
	if o.PublicKey != "" {
		if k, err := base64.StdEncoding.DecodeString(o.PublicKey); err != nil || len(k) != 32 {
			return Invalid("overlay.public_key", "must be a base64 WireGuard public key (32 bytes)")
		}
	}
	if o.Endpoint != "" {
		if ap, err := netip.ParseAddrPort(o.Endpoint); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return Invalid("overlay.endpoint", "must be the underlay ip:port of the WireGuard listener")
		}
	}
	switch o.WireGuard {
	case "", "kernel", "userspace":
	default:
		return Invalid("overlay.wireguard", "must be kernel or userspace")
	}
	return validateConflicts(o.Conflicts)
}
