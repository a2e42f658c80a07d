package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/security"
)

// access is how a route is guarded.
type access int

const (
	// accessRBAC needs a principal whose role the matrix allows the route's
	// resource and verb. It is the zero value, so a route that forgets to
	// say otherwise is guarded.
	accessRBAC access = iota
	// accessAuthenticated needs a principal, whatever its role: logging out,
	// and /metrics when it is not public.
	accessAuthenticated
	// accessPublic needs nothing: probes, the contract, login and refresh.
	accessPublic
)

// route is one row of THE route table: what serves a method and path, and
// what the caller must be allowed to do there. The table registers the
// handlers and drives authentication, authorization and the matrix test, so
// a route cannot exist without a rule.
type route struct {
	method, path string
	access       access
	// resource and verb are the matrix cell an accessRBAC route needs.
	resource, verb string
	// hideDenied answers a role the matrix refuses with 404 instead of 403:
	// reads of one resource, which must not reveal that it exists.
	hideDenied bool
	// idempotent attaches the Idempotency-Key middleware (writes only, and
	// never login or refresh, whose bodies hold secrets).
	idempotent bool
	// dryRun takes ?dry_run=true (dryrun.go); other writes refuse it.
	dryRun bool
	// limited charges the request to its client address's budget for
	// unauthenticated paths (limitAnonymous): public routes that do work
	// for anyone (a password hash, an etcd read, a console attach).
	limited bool
	handler gin.HandlerFunc
}

// routeKey identifies a route as gin reports it: "GET /v1/vms/:id".
func routeKey(method, path string) string { return method + " " + path }

// routeTable lists every endpoint. api/openapi/control-plane.yaml describes
// each one; a contract test fails when the two disagree, and the matrix test
// walks every row for every role.
func (s *Server) routeTable() []route {
	rbac := func(method, path, resource, verb string, h gin.HandlerFunc) route {
		r := route{method: method, path: path, resource: resource, verb: verb, handler: h}
		r.idempotent = method != http.MethodGet
		r.hideDenied = method == http.MethodGet && verb == security.VerbRead
		return r
	}
	// secret marks a route whose request or answer carries a password or a
	// token: Idempotency-Key records keep the answer and a hash of the body in
	// etcd, which must never hold either, so such routes do not take the key.
	secret := func(r route) route {
		r.idempotent = false
		return r
	}
	public := func(method, path string, h gin.HandlerFunc) route {
		return route{method: method, path: path, access: accessPublic, handler: h}
	}
	limited := func(r route) route {
		r.limited = true
		return r
	}
	dry := func(r route) route {
		r.dryRun = true
		return r
	}
	const (
		vm, task, user, token, audit = security.ResourceVM, security.ResourceTask, security.ResourceUser,
			security.ResourceToken, security.ResourceAudit
		node, joinToken, network   = security.ResourceNode, security.ResourceJoinToken, security.ResourceNetwork
		settings                   = security.ResourceSettings
		pool, volume               = security.ResourcePool, security.ResourceVolume
		get, post, patch, put, del = http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete
	)
	t := []route{
		public(get, "/healthz", s.healthz),
		public(get, "/readyz", s.readyz),
		public(get, "/openapi.yaml", s.openapi),
		// Anonymous callers get the version only; a bearer token, when
		// sent, must be valid and adds the build details (version.go).
		limited(public(get, "/v1/version", s.version)),
		limited(public(post, "/v1/auth/login", s.login)),
		limited(public(post, "/v1/auth/refresh", s.refresh)),
		// The refresh token in the body is the credential: logging out must work
		// after the access token expired, or the session would outlive it.
		limited(public(post, "/v1/auth/logout", s.logout)),

		dry(rbac(post, "/v1/vms", vm, security.VerbCreate, s.createVM)),
		rbac(get, "/v1/vms", vm, security.VerbList, s.listVMs),
		rbac(get, "/v1/vms/:id", vm, security.VerbRead, s.getVM),
		dry(rbac(patch, "/v1/vms/:id", vm, security.VerbUpdate, s.updateVM)),
		dry(rbac(del, "/v1/vms/:id", vm, security.VerbDelete, s.deleteVM)),
		dry(rbac(post, "/v1/vms/:id/start", vm, security.VerbStart, s.startVM)),
		dry(rbac(post, "/v1/vms/:id/stop", vm, security.VerbStop, s.stopVM)),
		// A hard power-off, a reboot and a pause all interrupt the guest
		// as a stop does; resuming lets it run again as a start does.
		rbac(post, "/v1/vms/:id/poweroff", vm, security.VerbStop, s.poweroffVM),
		rbac(post, "/v1/vms/:id/reboot", vm, security.VerbStop, s.rebootVM),
		rbac(post, "/v1/vms/:id/pause", vm, security.VerbStop, s.pauseVM),
		rbac(post, "/v1/vms/:id/resume", vm, security.VerbStart, s.resumeVM),
		// The serial output is part of what reading the VM shows.
		rbac(get, "/v1/vms/:id/logs", vm, security.VerbRead, s.vmLogs),
		// A VM's samples are part of what reading it shows; the tops are
		// lists (a developer's holds only their own VMs; a node's is a sum).
		rbac(get, "/v1/vms/:id/metrics", vm, security.VerbRead, s.vmMetrics),
		rbac(get, "/v1/top/vms", vm, security.VerbList, s.topVMs),
		rbac(get, "/v1/top/nodes", node, security.VerbList, s.topNodes),
		// The answer carries a token: no Idempotency-Key record may keep it.
		secret(rbac(post, "/v1/vms/:id/console", vm, security.VerbConsole, s.consoleToken)),
		// The single-use token in the query is the credential: a browser
		// cannot set headers on a WebSocket.
		limited(public(get, "/v1/vms/:id/console/ws", s.consoleWS)),

		rbac(get, "/v1/tasks", task, security.VerbList, s.listTasks),
		rbac(get, "/v1/tasks/:id", task, security.VerbRead, s.getTask),
		rbac(post, "/v1/tasks/:id/cancel", task, security.VerbCancel, s.cancelTask),

		rbac(get, "/v1/users", user, security.VerbList, s.listUsers),
		secret(rbac(post, "/v1/users", user, security.VerbCreate, s.createUser)),
		rbac(get, "/v1/users/me", user, security.VerbRead, s.getMe),
		secret(rbac(patch, "/v1/users/me", user, security.VerbUpdate, s.updateMe)),
		rbac(get, "/v1/users/:id", user, security.VerbRead, s.getUser),
		rbac(put, "/v1/users/:id/role", user, security.VerbUpdate, s.setRole),
		rbac(get, "/v1/users/:id/quota", user, security.VerbRead, s.getQuota),
		rbac(put, "/v1/users/:id/quota", user, security.VerbUpdate, s.setQuota),
		rbac(del, "/v1/users/:id", user, security.VerbDelete, s.deleteUser),

		rbac(get, "/v1/tokens", token, security.VerbList, s.listTokens),
		secret(rbac(post, "/v1/tokens", token, security.VerbCreate, s.createToken)),
		rbac(del, "/v1/tokens/:id", token, security.VerbDelete, s.revokeToken),

		rbac(get, "/v1/audit", audit, security.VerbList, s.listAudit),

		// The CA certificate is public: agents and CLIs pin it by fingerprint.
		limited(public(get, "/v1/ca", s.caPEM)),

		// The browser console and the dashboard (ui.go): static code
		// only; the page authenticates itself through the API.
		public(get, "/ui/vms/:name/console", s.uiConsole),
		public(get, "/ui", s.uiRoot),
		public(get, "/ui/", s.uiDashboard),
		public(get, "/ui/assets/*path", s.uiAssets),
		rbac(get, "/v1/nodes", node, security.VerbList, s.listNodes),
		// gin matches the static join-tokens segment before the :name param.
		rbac(get, "/v1/nodes/:name", node, security.VerbRead, s.getNode),
		rbac(post, "/v1/nodes/:name/cordon", node, security.VerbCordon, s.cordonNode),
		// Uncordoning is the other half of the same permission.
		rbac(post, "/v1/nodes/:name/uncordon", node, security.VerbCordon, s.uncordonNode),
		rbac(del, "/v1/nodes/:name", node, security.VerbDelete, s.deleteNode),
		rbac(get, "/v1/nodes/join-tokens", joinToken, security.VerbList, s.listJoinTokens),
		secret(rbac(post, "/v1/nodes/join-tokens", joinToken, security.VerbCreate, s.createJoinToken)),
		rbac(del, "/v1/nodes/join-tokens/:id", joinToken, security.VerbDelete, s.revokeJoinToken),

		dry(rbac(post, "/v1/networks", network, security.VerbCreate, s.createNetwork)),
		rbac(get, "/v1/networks", network, security.VerbList, s.listNetworks),
		rbac(get, "/v1/networks/:name", network, security.VerbRead, s.getNetwork),
		dry(rbac(patch, "/v1/networks/:name", network, security.VerbUpdate, s.updateNetwork)),
		dry(rbac(del, "/v1/networks/:name", network, security.VerbDelete, s.deleteNetwork)),

		rbac(post, "/v1/pools", pool, security.VerbCreate, s.createPool),
		rbac(get, "/v1/pools", pool, security.VerbList, s.listPools),
		rbac(get, "/v1/pools/:name", pool, security.VerbRead, s.getPool),
		rbac(patch, "/v1/pools/:name", pool, security.VerbUpdate, s.updatePool),
		rbac(del, "/v1/pools/:name", pool, security.VerbDelete, s.deletePool),
		rbac(post, "/v1/volumes", volume, security.VerbCreate, s.createVolume),
		rbac(get, "/v1/volumes", volume, security.VerbList, s.listVolumes),
		rbac(get, "/v1/volumes/:id", volume, security.VerbRead, s.getVolume),
		// Growing a volume changes its spec, as a VM update does.
		rbac(post, "/v1/volumes/:id/resize", volume, security.VerbUpdate, s.resizeVolume),
		rbac(del, "/v1/volumes/:id", volume, security.VerbDelete, s.deleteVolume),

		// Each type a stream asks for is authorized as its list is, in
		// the handler (watch.go): one route, several matrix cells.
		{method: get, path: "/v1/watch", access: accessAuthenticated, handler: s.watchStream},
		// Each event is authorized as its object's list is, in the
		// handler (events.go): a developer sees their own VMs' and tasks'.
		{method: get, path: "/v1/events", access: accessAuthenticated, handler: s.listEvents},
		{method: get, path: "/v1/events/:id", access: accessAuthenticated, handler: s.getEvent},

		secret(rbac(post, "/v1/cluster/join-tokens", joinToken, security.VerbCreate, s.createClusterJoinToken)),
		rbac(get, "/v1/cluster/members", security.ResourceReplica, security.VerbList, s.listClusterMembers),
		rbac(del, "/v1/cluster/members/:name", security.ResourceReplica, security.VerbDelete, s.removeClusterMember),
		// Profiles show code paths and memory, not data; still admin only.
		rbac(get, "/v1/debug/pprof/:profile", security.ResourceDebug, security.VerbRead, s.debugProfile),
		// Every client fails over between the replicas, so every
		// authenticated caller may learn their API URLs (nothing more).
		{method: get, path: "/v1/cluster/endpoints", access: accessAuthenticated, handler: s.listClusterEndpoints},
		// Node image caches name every tenant's image URLs: admin only.
		rbac(get, "/v1/images", security.ResourceImage, security.VerbList, s.listImages),
		rbac(del, "/v1/images/:digest", security.ResourceImage, security.VerbDelete, s.deleteImage),
		rbac(get, "/v1/cluster/settings", settings, security.VerbRead, s.getSettings),
		rbac(patch, "/v1/cluster/settings", settings, security.VerbUpdate, s.updateSettings),
	}
	if s.metrics != nil {
		m := route{method: get, path: "/metrics", access: accessPublic, handler: s.metrics.handler()}
		if !s.cfg.MetricsPublic {
			m.access = accessAuthenticated
		}
		t = append(t, m)
	}
	return t
}

// routes registers every row of the route table with its guards: for a
// guarded route, authentication, then authorization, then (for writes) the
// idempotency key, so a refused request never reserves a key.
func (s *Server) routes() {
	s.table = make(map[string]route)
	for _, r := range s.routeTable() {
		var chain []gin.HandlerFunc
		if r.limited {
			chain = append(chain, s.limitAnonymous)
		}
		switch r.access {
		case accessRBAC:
			chain = append(chain, s.authenticate, s.authorize(r))
		case accessAuthenticated:
			chain = append(chain, s.authenticate)
		}
		switch {
		case r.dryRun:
			chain = append(chain, s.dryRun)
		case r.method != http.MethodGet:
			chain = append(chain, s.noDryRun)
		}
		if r.idempotent {
			chain = append(chain, s.idempotency)
		}
		chain = append(chain, r.handler)
		s.engine.Handle(r.method, r.path, chain...)
		s.table[routeKey(r.method, r.path)] = r
	}
}
