// Package server is the control plane's REST API: the gin router, its
// middleware (request ids, access logs, body limits, the error envelope,
// idempotency keys, metrics) and the handlers.
package server

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// ControlPlane is what the handlers need of the actor system. The real one is
// *gateway.Gateway; handlers never see actors, PIDs or futures.
//
// Owner arguments scope a call: a user id limits it to that user's resources
// (the caller's role has "own" scope), and "" allows every owner ("any"). A
// resource outside the scope is reported as not found.
type ControlPlane interface {
	// Ready reports whether etcd answers and the actor system has started.
	Ready(ctx context.Context) error

	CreateVM(ctx context.Context, owner string, req messages.CreateVMRequest) (*messages.VM, *messages.Task, error)
	// GetVM resolves ref as an id or, failing that, as a name of owner's.
	GetVM(ctx context.Context, owner, ref string) (*messages.VM, error)
	ListVMs(ctx context.Context, owner string, page store.Page) ([]*messages.VM, string, error)
	UpdateVM(ctx context.Context, owner, ref string, req messages.UpdateVMRequest) (*messages.VM, error)
	// RunVMTask starts vm.start, vm.stop, vm.poweroff, vm.reboot or
	// vm.delete with the request's options.
	RunVMTask(ctx context.Context, owner, ref string, req messages.RequestVMTask) (*messages.VM, *messages.Task, error)
	// PauseVM and ResumeVM pause and resume a running VM on its node,
	// synchronously; VMLogs reads the end of its serial output (at most
	// tail bytes, 0 for the node's default). A VM that is not running
	// answers vm_not_running (409), a node that cannot be called
	// node_unreachable (503).
	PauseVM(ctx context.Context, owner, ref string) (*messages.VM, error)
	ResumeVM(ctx context.Context, owner, ref string) (*messages.VM, error)
	VMLogs(ctx context.Context, owner, ref string, tail int64) ([]byte, error)
	// IssueConsoleToken issues a single-use console token for the VM,
	// bound to user (who asks), owner (their scope), the VM and the mode.
	// AttachConsole consumes one for VM ref and dials the console on the
	// VM's node: console_token_invalid (401) for a bad, expired or used
	// token; the agent's refusals (console_busy, vm_not_running) as they
	// come. The caller owns the returned connection.
	IssueConsoleToken(ctx context.Context, user, owner, ref string, req messages.ConsoleTokenRequest) (*messages.ConsoleToken, error)
	AttachConsole(ctx context.Context, ref, token string) (*websocket.Conn, *store.ConsoleTokenRecord, error)

	GetTask(ctx context.Context, owner, id string) (*messages.Task, error)
	// WaitTask returns once the task is terminal or ctx ends.
	WaitTask(ctx context.Context, owner, id string) (*messages.Task, error)
	ListTasks(ctx context.Context, owner string, page store.Page) ([]*messages.Task, string, error)
	CancelTask(ctx context.Context, owner, id string) (*messages.Task, error)

	// The control plane keeps Idempotency-Key records in its store.
	IdempotencyStore
	// Identity authenticates requests and manages users, sessions and tokens.
	Identity
	// Nodes enrolls agents and answers node and join-token administration.
	Nodes
	// Networks manages networks.
	Networks
	// Storage manages pools and volumes.
	Storage
	// ClusterSettings reads and changes the cluster settings.
	ClusterSettings
	// Quotas reads and sets per-user quotas.
	Quotas
	// Cluster admits replicas and lists them.
	Cluster
	// VMMetricsReader answers the VM samples nodes report.
	VMMetricsReader
	// Events lists lifecycle events.
	Events
}

// VMMetricsReader answers the latest VM samples the nodes' heartbeats
// carried (held in memory by the replica that received them).
type VMMetricsReader interface {
	// VMMetrics is one VM's sample, scoped like GetVM.
	VMMetrics(ctx context.Context, owner, ref string) (*messages.VMMetricsView, error)
	// TopVMs are the sampled VMs in owner's scope, busiest first, at
	// most limit (0: the default).
	TopVMs(ctx context.Context, owner string, limit int) ([]messages.VMMetricsView, error)
	// TopNodes are the nodes with their VMs' samples summed, busiest first.
	TopNodes(ctx context.Context) ([]messages.NodeTop, error)
}

// Events is what GET /v1/events needs. The handler filters by what the
// caller may see (EventFilter.Visible).
type Events interface {
	ListEvents(ctx context.Context, f store.EventFilter, page store.Page) ([]*messages.Event, string, error)
	GetEvent(ctx context.Context, id string) (*messages.Event, error)
}

// Cluster is what the replica join token, the join handshake and the member
// list need.
type Cluster interface {
	// CreateClusterJoinToken mints a replica join token (kind "replica").
	CreateClusterJoinToken(ctx context.Context, p messages.Principal, req messages.CreateClusterJoinTokenRequest) (*messages.CreatedJoinToken, error)
	// JoinReplica redeems a replica join token, signs the peer CSR and adds
	// the replica as an etcd learner (anonymous, on the agent listener).
	JoinReplica(ctx context.Context, req messages.ReplicaJoinRequest, source string) (*messages.ReplicaJoinResponse, error)
	// ClusterMembers lists the replicas.
	ClusterMembers(ctx context.Context) ([]messages.ClusterMember, error)
	// RemoveClusterMember takes a replica (by name, member id or peer
	// address) out of the cluster.
	RemoveClusterMember(ctx context.Context, ref string, force bool) (*messages.ClusterMember, error)
	// ClusterEndpoints lists the API URLs of the replicas that serve.
	ClusterEndpoints(ctx context.Context) (*messages.ClusterEndpoints, error)
}

// Quotas is what the quota handlers need. A quota_exceeded refusal of a
// create or resize is 422, as is unschedulable: the request is well formed
// and allowed, but cannot be honoured as asked.
type Quotas interface {
	GetQuota(ctx context.Context, user string) (*messages.QuotaView, error)
	// SetQuota replaces the user's quota (admin only; the handler checks).
	SetQuota(ctx context.Context, user string, q messages.Quota) (*messages.QuotaView, error)
}

// Networks is what the network handlers need. A ref is a network's name or
// id.
type Networks interface {
	// CreateNetwork validates and commits a network (201, synchronous).
	CreateNetwork(ctx context.Context, req messages.CreateNetworkRequest) (*messages.Network, error)
	GetNetwork(ctx context.Context, ref string) (*messages.Network, error)
	ListNetworks(ctx context.Context, page store.Page) ([]*messages.Network, string, error)
	// UpdateNetwork changes what may change on a network (egress) in one
	// transaction guarded by its revision; p is whom the audit names.
	UpdateNetwork(ctx context.Context, p messages.Principal, ref string, patch store.NetworkPatch) (*messages.Network, error)
	// DeleteNetwork is refused (network_in_use) while VMs are attached.
	DeleteNetwork(ctx context.Context, ref string) error
}

// Storage is what the pool and volume handlers need. A pool ref is a
// name or id; a volume ref an id or one of the scope's names. Owner and
// scope arguments work as for VMs.
type Storage interface {
	// CreatePool validates and commits a pool (201, synchronous).
	CreatePool(ctx context.Context, req messages.CreatePoolRequest) (*messages.StoragePool, error)
	// GetPool answers a pool with its status on each of its nodes.
	GetPool(ctx context.Context, ref string) (*messages.StoragePool, error)
	ListPools(ctx context.Context, page store.Page) ([]*messages.StoragePool, string, error)
	// UpdatePool changes a pool's node set (pool_node_in_use when a
	// removed node holds volumes of it).
	UpdatePool(ctx context.Context, ref string, patch messages.PoolPatch) (*messages.StoragePool, error)
	// DeletePool is refused (pool_in_use) while volumes are in the pool.
	DeletePool(ctx context.Context, ref string) error
	CreateVolume(ctx context.Context, owner string, req messages.CreateVolumeRequest) (*messages.Volume, error)
	GetVolume(ctx context.Context, scope, ref string) (*messages.Volume, error)
	ListVolumes(ctx context.Context, scope string, page store.Page) ([]*messages.Volume, string, error)
	// ResizeVolume grows a volume (volume_shrink_unsupported below its
	// size, insufficient_storage above the pool's free space).
	ResizeVolume(ctx context.Context, scope, ref string, size int64) (*messages.Volume, error)
	DeleteVolume(ctx context.Context, scope, ref string) error
}

// Nodes is what node enrollment, the cluster CA endpoint and node
// administration need.
type Nodes interface {
	// CAPEM is the cluster CA certificate; CAFingerprint its SHA-256 (hex).
	CAPEM() []byte
	CAFingerprint() string
	CreateJoinToken(ctx context.Context, p messages.Principal, req messages.CreateJoinTokenRequest) (*messages.CreatedJoinToken, error)
	ListJoinTokens(ctx context.Context, page store.Page) ([]messages.JoinTokenView, string, error)
	RevokeJoinToken(ctx context.Context, id string) error
	// Enroll consumes a join token and signs the node's CSR, in one
	// transaction with the node's creation.
	Enroll(ctx context.Context, req messages.EnrollRequest, source string) (*messages.EnrollResponse, error)
	ListNodes(ctx context.Context, page store.Page) ([]*messages.Node, string, error)
	GetNode(ctx context.Context, name string) (*messages.Node, error)
	// Heartbeat authenticates an agent by its verified client certificate
	// and records its observed state; it answers the desired state.
	Heartbeat(ctx context.Context, cert *x509.Certificate, hb messages.Heartbeat) (*messages.HeartbeatResponse, error)
	// RenewNodeCert signs a new certificate for the node cert names (its
	// current one, verified the same way as for a heartbeat).
	RenewNodeCert(ctx context.Context, cert *x509.Certificate, req messages.RenewRequest) (*messages.RenewResponse, error)
	// Cordon and Uncordon set whether new VMs may be placed on a node.
	Cordon(ctx context.Context, name string) (*messages.Node, error)
	Uncordon(ctx context.Context, name string) (*messages.Node, error)
	// DeleteNode removes a node; refused (node_has_vms) while VMs are placed
	// on it, unless force.
	DeleteNode(ctx context.Context, name string, force bool) error
}

// Identity is what the authentication, user, token and audit handlers need.
// Errors are *messages.Error: KindUnauthenticated (401) for bad credentials,
// KindTooManyRequests (429) for rate-limited logins.
type Identity interface {
	// Authenticate resolves a bearer token (a JWT or an otx_ API token).
	Authenticate(ctx context.Context, bearer string) (*messages.Principal, error)
	Login(ctx context.Context, req messages.LoginRequest, source string) (*messages.TokenPair, error)
	Refresh(ctx context.Context, refreshToken, source string) (*messages.TokenPair, error)
	Logout(ctx context.Context, refreshToken string) error
	// AllowAnonymous takes one request from the budget of a client address
	// for unauthenticated paths, or returns a KindTooManyRequests error
	// (rate_limited, details.retry_after in seconds).
	AllowAnonymous(source string) error

	CreateUser(ctx context.Context, req messages.CreateUserRequest) (*messages.UserView, error)
	GetUser(ctx context.Context, id string) (*messages.UserView, error)
	ListUsers(ctx context.Context, page store.Page) ([]messages.UserView, string, error)
	UpdateMe(ctx context.Context, p messages.Principal, req messages.UpdateMeRequest) (*messages.UserView, error)
	SetRole(ctx context.Context, id, role string) (*messages.UserView, error)
	DeleteUser(ctx context.Context, id string) error

	CreateAPIToken(ctx context.Context, p messages.Principal, req messages.CreateAPITokenRequest) (*messages.CreatedAPIToken, error)
	ListAPITokens(ctx context.Context, owner string, page store.Page) ([]messages.APITokenView, string, error)
	RevokeAPIToken(ctx context.Context, owner, id string) error

	// Audit records an entry without waiting for it to be written; entries
	// are batched into few etcd transactions.
	Audit(entry messages.AuditEntry)
	ListAudit(ctx context.Context, page store.Page) ([]messages.AuditEntry, string, error)
}

// IdempotencyStore remembers answers to writes sent with an Idempotency-Key.
type IdempotencyStore interface {
	// ReserveIdempotency reserves the key for one attempt (a hold), or
	// answers the key's record; a record older than expireAfter is
	// forgotten. With an error, a non-nil hold may have been taken and
	// must be abandoned.
	ReserveIdempotency(ctx context.Context, scope, key, requestHash string, expireAfter time.Duration) (store.Hold, *store.IdempotencyRecord, error)
}
