package security

// The permission matrix. One line per resource and verb; the columns are
// the scope each role gets. "own" means only resources the caller owns
// (for list: the result is filtered to them; for create: the new resource is
// owned by the caller), "any" means every resource, "-" means never.
//
//	resource    verb      admin  operator  developer  viewer
//	vm          read      any    any       own        own
//	vm          list      any    any       own        own
//	vm          create    any    own       own        -
//	vm          update    any    own       own        -
//	vm          delete    any    own       own        -
//	vm          start     any    any       own        -
//	vm          stop      any    any       own        -
//	vm          console   any    any       own        -
//	task        read      any    any       own        own
//	task        list      any    any       own        own
//	task        cancel    any    any       own        -
//	node        read      any    any       any        any
//	node        list      any    any       any        any
//	node        create    any    -         -          -
//	node        update    any    -         -          -
//	node        delete    any    -         -          -
//	node        cordon    any    any       -          -
//	node        drain     any    any       -          -
//	network     read      any    any       any        any
//	network     list      any    any       any        any
//	network     create    any    -         -          -
//	network     update    any    -         -          -
//	network     delete    any    -         -          -
//	pool        read      any    any       any        any
//	pool        list      any    any       any        any
//	pool        create    any    -         -          -
//	pool        update    any    -         -          -
//	pool        delete    any    -         -          -
//	pool        scan      any    any       -          -
//	volume      read      any    any       own        own
//	volume      list      any    any       own        own
//	volume      create    any    own       own        -
//	volume      update    any    own       own        -
//	volume      delete    any    own       own        -
//	settings    read      any    -         -          -
//	settings    update    any    -         -          -
//	user        read      any    own       own        own
//	user        list      any    -         -          -
//	user        create    any    -         -          -
//	user        update    any    own       own        own
//	user        delete    any    -         -          -
//	token       read      any    own       own        own
//	token       list      any    own       own        own
//	token       create    any    own       own        own
//	token       delete    any    own       own        own
//	audit       read      any    -         -          -
//	audit       list      any    -         -          -
//	join_token  read      any    -         -          -
//	join_token  list      any    -         -          -
//	join_token  create    any    -         -          -
//	join_token  delete    any    -         -          -
//	replica     list      any    -         -          -
//	debug       read      any    -         -          -
//	image       list      any    -         -          -
//	image       delete    any    -         -          -
//
// Why these choices:
//   - Users own VMs. Developers act only on their own. Operators run the
//     fleet, so they may see, start, stop and open the console of any VM and
//     cancel any task (a stuck task can block a drain), but they create,
//     reconfigure and delete only their own VMs: destroying someone's VM is
//     an admin decision. Viewers read their own VMs and tasks and never write.
//   - Nodes, networks and pools are shared infrastructure: every
//     authenticated user may read and list them (placement and network
//     choices need it); only admin changes them, except that operators may
//     cordon/drain nodes (cordon covers uncordon) and scan pools.
//   - Volumes are owned like VMs and scoped the same way: a volume is a
//     VM's disk, so whoever may see or change a user's VMs may see or
//     change that user's volumes.
//   - Settings hold cluster-wide configuration and are admin only, reads
//     included, since they may name internal endpoints.
//   - Every user reads and updates their own user record (/v1/users/me).
//     Changing a role is an update that needs scope any, so only admin can;
//     the handler enforces that field-level rule by checking for ScopeAny.
//   - Everyone manages their own API tokens; the token's role is capped with
//     Role.AtMost by the handler.
//   - The audit log and join tokens (which admit machines to the cluster)
//     are admin only.
//
// A denied own-scoped check on a resource another user owns must answer
// 404, never 403 (DESIGN §6); that mapping is the HTTP layer's.

// Scope is how far a permission reaches.
type Scope int

// Scopes, from nothing to everything. The zero value is ScopeNone so a
// missing rule denies.
const (
	ScopeNone Scope = iota // never
	ScopeOwn               // only resources the caller owns
	ScopeAny               // every resource
)

// String returns "none", "own" or "any".
func (s Scope) String() string {
	switch s {
	case ScopeOwn:
		return "own"
	case ScopeAny:
		return "any"
	}
	return "none"
}

// Permits reports whether the scope allows acting on a resource the caller
// owns (isOwner) or not.
func (s Scope) Permits(isOwner bool) bool {
	return s == ScopeAny || s == ScopeOwn && isOwner
}

// Resources named in the matrix.
const (
	ResourceVM        = "vm"
	ResourceTask      = "task"
	ResourceNode      = "node"
	ResourceNetwork   = "network"
	ResourcePool      = "pool"
	ResourceVolume    = "volume"
	ResourceSettings  = "settings"
	ResourceUser      = "user"
	ResourceToken     = "token"
	ResourceAudit     = "audit"
	ResourceJoinToken = "join_token"
	// ResourceReplica is the control plane's own replicas (etcd members).
	ResourceReplica = "replica"
	// ResourceDebug is a replica's runtime profiles and goroutine dump.
	ResourceDebug = "debug"
	// ResourceImage is the nodes' image caches: what they hold (URLs of
	// every tenant's images, which VMs use them) and their deletion.
	ResourceImage = "image"
)

// Verbs named in the matrix. Not every verb applies to every resource.
const (
	VerbRead    = "read"
	VerbList    = "list"
	VerbCreate  = "create"
	VerbUpdate  = "update"
	VerbDelete  = "delete"
	VerbStart   = "start"
	VerbStop    = "stop"
	VerbConsole = "console"
	VerbCancel  = "cancel"
	VerbCordon  = "cordon"
	VerbDrain   = "drain"
	VerbScan    = "scan"
)

// rule is one line of the table above; scopes are in the order of Roles:
// admin, operator, developer, viewer.
type rule struct {
	resource, verb string
	scopes         [4]Scope
}

// rules is the matrix exactly as the table above writes it.
var rules = func() []rule {
	// One letter each keeps every rule on one line: None, Own, Any.
	const (
		N = ScopeNone
		O = ScopeOwn
		A = ScopeAny
	)
	return []rule{
		{ResourceVM, VerbRead, [4]Scope{A, A, O, O}},
		{ResourceVM, VerbList, [4]Scope{A, A, O, O}},
		{ResourceVM, VerbCreate, [4]Scope{A, O, O, N}},
		{ResourceVM, VerbUpdate, [4]Scope{A, O, O, N}},
		{ResourceVM, VerbDelete, [4]Scope{A, O, O, N}},
		{ResourceVM, VerbStart, [4]Scope{A, A, O, N}},
		{ResourceVM, VerbStop, [4]Scope{A, A, O, N}},
		{ResourceVM, VerbConsole, [4]Scope{A, A, O, N}},

		{ResourceTask, VerbRead, [4]Scope{A, A, O, O}},
		{ResourceTask, VerbList, [4]Scope{A, A, O, O}},
		{ResourceTask, VerbCancel, [4]Scope{A, A, O, N}},

		{ResourceNode, VerbRead, [4]Scope{A, A, A, A}},
		{ResourceNode, VerbList, [4]Scope{A, A, A, A}},
		{ResourceNode, VerbCreate, [4]Scope{A, N, N, N}},
		{ResourceNode, VerbUpdate, [4]Scope{A, N, N, N}},
		{ResourceNode, VerbDelete, [4]Scope{A, N, N, N}},
		{ResourceNode, VerbCordon, [4]Scope{A, A, N, N}},
		{ResourceNode, VerbDrain, [4]Scope{A, A, N, N}},

		{ResourceNetwork, VerbRead, [4]Scope{A, A, A, A}},
		{ResourceNetwork, VerbList, [4]Scope{A, A, A, A}},
		{ResourceNetwork, VerbCreate, [4]Scope{A, N, N, N}},
		{ResourceNetwork, VerbUpdate, [4]Scope{A, N, N, N}},
		{ResourceNetwork, VerbDelete, [4]Scope{A, N, N, N}},

		{ResourcePool, VerbRead, [4]Scope{A, A, A, A}},
		{ResourcePool, VerbList, [4]Scope{A, A, A, A}},
		{ResourcePool, VerbCreate, [4]Scope{A, N, N, N}},
		{ResourcePool, VerbUpdate, [4]Scope{A, N, N, N}},
		{ResourcePool, VerbDelete, [4]Scope{A, N, N, N}},
		{ResourcePool, VerbScan, [4]Scope{A, A, N, N}},

		{ResourceVolume, VerbRead, [4]Scope{A, A, O, O}},
		{ResourceVolume, VerbList, [4]Scope{A, A, O, O}},
		{ResourceVolume, VerbCreate, [4]Scope{A, O, O, N}},
		{ResourceVolume, VerbUpdate, [4]Scope{A, O, O, N}},
		{ResourceVolume, VerbDelete, [4]Scope{A, O, O, N}},

		{ResourceSettings, VerbRead, [4]Scope{A, N, N, N}},
		{ResourceSettings, VerbUpdate, [4]Scope{A, N, N, N}},

		{ResourceUser, VerbRead, [4]Scope{A, O, O, O}},
		{ResourceUser, VerbList, [4]Scope{A, N, N, N}},
		{ResourceUser, VerbCreate, [4]Scope{A, N, N, N}},
		{ResourceUser, VerbUpdate, [4]Scope{A, O, O, O}},
		{ResourceUser, VerbDelete, [4]Scope{A, N, N, N}},

		{ResourceToken, VerbRead, [4]Scope{A, O, O, O}},
		{ResourceToken, VerbList, [4]Scope{A, O, O, O}},
		{ResourceToken, VerbCreate, [4]Scope{A, O, O, O}},
		{ResourceToken, VerbDelete, [4]Scope{A, O, O, O}},

		{ResourceAudit, VerbRead, [4]Scope{A, N, N, N}},
		{ResourceAudit, VerbList, [4]Scope{A, N, N, N}},

		{ResourceJoinToken, VerbRead, [4]Scope{A, N, N, N}},
		{ResourceJoinToken, VerbList, [4]Scope{A, N, N, N}},
		{ResourceJoinToken, VerbCreate, [4]Scope{A, N, N, N}},
		{ResourceJoinToken, VerbDelete, [4]Scope{A, N, N, N}},

		{ResourceReplica, VerbList, [4]Scope{A, N, N, N}},
		{ResourceReplica, VerbDelete, [4]Scope{A, N, N, N}},

		{ResourceDebug, VerbRead, [4]Scope{A, N, N, N}},

		{ResourceImage, VerbList, [4]Scope{A, N, N, N}},
		{ResourceImage, VerbDelete, [4]Scope{A, N, N, N}},
	}
}()

// matrix indexes rules as role → resource → verb → scope. It is built once
// and never written after, so concurrent reads need no lock.
var matrix = buildMatrix()

func buildMatrix() map[Role]map[string]map[string]Scope {
	m := make(map[Role]map[string]map[string]Scope, 4)
	for i, role := range Roles() {
		m[role] = make(map[string]map[string]Scope)
		for _, r := range rules {
			if m[role][r.resource] == nil {
				m[role][r.resource] = make(map[string]Scope)
			}
			m[role][r.resource][r.verb] = r.scopes[i]
		}
	}
	return m
}

// Allowed returns the scope role has for verb on resource. Unknown roles,
// resources and verbs, and pairs with no rule, get ScopeNone.
func Allowed(role Role, resource, verb string) Scope {
	return matrix[role][resource][verb] // nil maps read as the zero value
}

// Matrix returns a copy of the whole matrix, role → resource → verb → scope,
// with an entry (ScopeNone included) for every resource and verb that has a
// rule. A (resource, verb) pair missing from it has no rule, which is what
// the router test uses to fail on a route nobody classified.
func Matrix() map[Role]map[string]map[string]Scope {
	out := make(map[Role]map[string]map[string]Scope, len(matrix))
	for role, resources := range matrix {
		out[role] = make(map[string]map[string]Scope, len(resources))
		for res, verbs := range resources {
			out[role][res] = make(map[string]Scope, len(verbs))
			for verb, s := range verbs {
				out[role][res][verb] = s
			}
		}
	}
	return out
}
