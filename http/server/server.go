package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/watch"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxBodyBytes   = 1 << 20
	DefaultIdempotencyTTL = 24 * time.Hour
)

// Config tunes the REST API.
type Config struct {
	// MaxBodyBytes caps a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MetricsEnabled serves /metrics and records request metrics.
	MetricsEnabled bool
	// IdempotencyTTL is how long an Idempotency-Key answer is replayed;
	// 0 means DefaultIdempotencyTTL. Records older than this are ignored
	// even if a sweep has not removed them yet.
	IdempotencyTTL time.Duration
	// MetricsPublic serves /metrics without authentication, for scrapers
	// that carry no token; when false it needs a principal of any role.
	// DefaultConfig sets it: the metrics hold no per-user data.
	MetricsPublic bool
	// ConsoleOrigins are browser origins (scheme://host[:port]) allowed to
	// open a console WebSocket besides pages of the API's own host
	// (http.console_origins).
	ConsoleOrigins []string
	// ConsoleQueue, ConsoleStall and ConsoleKeepalive tune the console
	// proxy (console.go); zero means the default.
	ConsoleQueue     int
	ConsoleStall     time.Duration
	ConsoleKeepalive time.Duration
	// StoreStatus, when set, is read at every scrape of /metrics for the
	// store's sizes, quota, alarms and defragmentations
	// (persistence/etcd.Member.Status).
	StoreStatus func(context.Context) (etcd.Status, error)
	// Watch is the replica's watch hub; GET /v1/watch answers 503
	// watch_unavailable without one. WatchMaxClients bounds the streams
	// of the replica (429 watch_capacity_reached over it; 0 means
	// DefaultWatchMaxClients), WatchPerUser each user's open streams (429
	// too_many_watches over it; 0 means DefaultWatchPerUser);
	// WatchAuthCheck is how often a stream
	// re-authenticates its token (0 means DefaultWatchAuthCheck; a JWT is
	// also checked right after it expires).
	Watch           *watch.Hub
	WatchMaxClients int
	WatchPerUser    int
	WatchAuthCheck  time.Duration
	// HasQuorum, when set, reports whether this replica's etcd member
	// knows a leader; without one every route that needs the store
	// answers 503 no_quorum at once (quorum.go). Nil: always.
	HasQuorum func() bool
	// consoleEnded, when set, learns each console session's close code and
	// queue high-water mark: a test seam.
	consoleEnded func(code, high int)
}

// DefaultConfig is the configuration with every default filled in,
// MetricsPublic included (a bool's zero value cannot say "true").
func DefaultConfig() Config {
	return Config{MetricsEnabled: true, MetricsPublic: true}.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if c.ConsoleQueue <= 0 {
		c.ConsoleQueue = DefaultConsoleQueue
	}
	if c.ConsoleStall <= 0 {
		c.ConsoleStall = DefaultConsoleStall
	}
	if c.ConsoleKeepalive <= 0 {
		c.ConsoleKeepalive = DefaultConsoleKeepalive
	}
	if c.WatchMaxClients <= 0 {
		c.WatchMaxClients = DefaultWatchMaxClients
	}
	if c.WatchPerUser <= 0 {
		c.WatchPerUser = DefaultWatchPerUser
	}
	if c.WatchAuthCheck <= 0 {
		c.WatchAuthCheck = DefaultWatchAuthCheck
	}
	return c
}

// Server is the control plane's REST API over a ControlPlane.
type Server struct {
	cfg     Config
	cp      ControlPlane
	log     *slog.Logger
	metrics *metrics // nil when disabled
	engine  *gin.Engine
	// agentReplica names this replica on the agent listener
	// (AgentReplica).
	agentReplica string
	// now is the clock for idempotency expiry and audit times; a seam for tests.
	now func() time.Time
	// principal resolves a request's credentials: bearerPrincipal, always,
	// outside this package's tests (the authentication-overhead benchmark
	// swaps in a fixed principal for its baseline).
	principal func(*gin.Context) (*messages.Principal, error)
	// table indexes the route table by routeKey; read-only after New.
	table map[string]route
	// watchers counts each user's open watch streams.
	watchers watchers
}

// New builds the router and its middleware. It starts nothing: serve
// Handler() from an http.Server the caller owns.
func New(cfg Config, cp ControlPlane, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg.withDefaults(), cp: cp, log: log, now: time.Now}
	s.principal = s.bearerPrincipal
	if s.cfg.MetricsEnabled {
		s.metrics = newMetrics()
		if s.cfg.StoreStatus != nil {
			s.metrics.registry.MustRegister(newStoreCollector(s.cfg.StoreStatus, log))
		}
		if s.cfg.Watch != nil {
			s.metrics.registry.MustRegister(newFleetCollector(s.cfg.Watch))
		}
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	// A redirect has no envelope and hides a client's wrong path; answer 404.
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.HandleMethodNotAllowed = true
	// Route on the escaped path so that a parameter may hold an escaped
	// slash: a VM named OWNER/NAME (/v1/vms/OWNER%2FNAME). Values are
	// unescaped before handlers see them.
	e.UseRawPath = true
	// Trust no proxy headers for the client address until a proxy setting exists.
	_ = e.SetTrustedProxies(nil)
	// Order matters: the request id first so every later line carries it;
	// observe and audit outside recovery so a panic is logged, counted and
	// audited as the 500 it became.
	e.Use(requestIDMiddleware, s.observe, s.audit, s.recovery, s.bodyLimit, s.quorumGate(restWithoutQuorum))
	e.NoRoute(func(c *gin.Context) {
		s.writeError(c, apiError(kindRouteNotFound, "route_not_found", "no route for %s %s", c.Request.Method, c.Request.URL.Path))
	})
	e.NoMethod(func(c *gin.Context) {
		s.writeError(c, apiError(kindMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path).
			WithDetail("allow", c.Writer.Header().Get("Allow")))
	})
	s.engine = e
	s.routes()
	return s
}

// Handler is the http.Handler to serve.
func (s *Server) Handler() http.Handler { return s.engine }

// Routes lists the registered routes (gin templates such as /v1/vms/:id).
func (s *Server) Routes() gin.RoutesInfo { return s.engine.Routes() }
