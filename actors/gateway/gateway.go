// Package gateway is the small typed API the HTTP layer calls. It starts the
// actor system with its guardians and hides PIDs, futures and actor messages
// behind plain methods.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/job"
	"github.com/otherix/otherix/actors/maintenance"
	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/actors/placement"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/actors/vm"
	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Config tunes the actor system. The zero value is usable: every field has a
// production default.
type Config struct {
	// Replica names this replica in job claims; defaults to the host name.
	Replica string
	// Version is the control plane's release version agents are held to
	// (internal/versionskew); default buildinfo.Version().
	Version string
	// ClaimTTL is how long a dead replica's jobs stay claimed (default 10s).
	ClaimTTL time.Duration
	// Resync is how often the dispatcher reloads the whole job queue to heal
	// its in-memory view (default 1m).
	Resync time.Duration
	// JobBackoffBase and JobBackoffMax bound the wait between job attempts
	// (defaults 2s and 1m); JobAttempts is each job's budget (default 5).
	JobBackoffBase time.Duration
	JobBackoffMax  time.Duration
	JobAttempts    int
	// AskTimeout bounds one request to an actor (default 10s).
	AskTimeout time.Duration
	// PassivateAfter stops idle entity actors (default 2m).
	PassivateAfter time.Duration
	// CleanupInterval, TaskRetention and IdempotencyRetention drive the
	// cleanup loop (defaults 1m, 7 days, 24h).
	CleanupInterval      time.Duration
	TaskRetention        time.Duration
	IdempotencyRetention time.Duration
	// EventsInterval is how often the events loop prunes lifecycle events
	// to the settings' retention (default 1m).
	EventsInterval time.Duration
	// Backups: every BackupInterval a snapshot goes to BackupDir, keeping
	// BackupKeep. Disabled when BackupDir or Snapshot is empty.
	BackupDir      string
	BackupInterval time.Duration
	BackupKeep     int
	Snapshot       maintenance.Snapshotter
	Prune          func(dir string, keep int) ([]string, error)
	// Space, when set, runs the storage loop every SpaceInterval (default
	// 1m) and once at start: defragmentation under SpacePolicy, and
	// recovery from etcd's space alarm (maintenance.Storage).
	Space         maintenance.Space
	SpaceInterval time.Duration
	SpacePolicy   maintenance.StoragePolicy
	// AllocationCheckInterval is how often the allocations loop recounts
	// the VM rows, reports nodes whose allocation document drifted from
	// them and repairs those (default 1h; it reads every VM row).
	AllocationCheckInterval time.Duration
	// NoDispatch keeps this replica from claiming jobs: it serves the API and
	// leaves the jobs to other replicas (for instance while it is drained
	// before maintenance).
	NoDispatch bool
	// Placer chooses nodes for VMs (default: placement over the store with
	// Placement's ratios).
	Placer    job.Placer
	Placement placement.Config
	// Membership is this replica's etcd member, for replica joins and the
	// member list; nil refuses both.
	Membership enrollment.Membership
	// Agent runs jobs' tasks on node agents (default: none can be called).
	Agent job.Agent
	// Calls makes the synchronous agent calls: pause, resume, logs and
	// consoles (default: none, and those answer node_unreachable). In
	// production the same client as Agent.
	Calls AgentCaller
	// OnMaintenance hears every maintenance run (tests wait on it).
	OnMaintenance func(maintenance.Ran)
	// Loops, when set, runs the cluster-wide loops (cleanup and expiry
	// sweeps, node liveness, key rotation, backups) only while this
	// replica owns them (persistence/election). Nil runs them here
	// unconditionally, as a lone control plane does.
	Loops LoopOwner

	// Quorum, when set, is this replica's etcd member: the liveness loop
	// pauses while it has no quorum and counts heartbeat silences afresh
	// from when it regains it (liveness.go). Nil: a single member, always.
	Quorum QuorumEpochs

	// PeerMetrics, when set, asks the other replicas for the VM samples
	// they hold (nodes heartbeat one replica each); nil: this replica
	// answers with its own samples only, as a lone control plane does.
	PeerMetrics PeerMetrics

	// Identity. The zero values are the production defaults.
	Identity identity.Config
	// Nodes tunes heartbeats and liveness.
	Nodes NodesConfig
}

// LoopOwner runs registered loops only while this replica owns them;
// *election.Loops is one.
type LoopOwner interface {
	// Register adds a loop: run is called each time ownership is gained,
	// with a context that ends when it is lost, and must then return.
	Register(name string, run func(ctx context.Context))
}

// NodesConfig tunes node heartbeats and the liveness loop.
type NodesConfig struct {
	// HeartbeatInterval is what agents are told to use (default 30s); the
	// liveness loop runs every half of it.
	HeartbeatInterval time.Duration
	// GoneAfter moves an unreachable node to gone that long after its last
	// heartbeat (default 10m).
	GoneAfter time.Duration
	// Now is the clock of heartbeats and liveness (default time.Now).
	Now func() time.Time
	// Shared says several replicas may serve this cluster: a heartbeat
	// then also writes its time to the node's row every interval
	// (node.Config.StampEvery), so that replicas the agent does not
	// heartbeat never take it for silent.
	Shared bool
}

func (c *Config) defaults() {
	if c.Replica == "" {
		c.Replica, _ = os.Hostname()
	}
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.ClaimTTL, 10*time.Second)
	set(&c.Resync, time.Minute)
	set(&c.JobBackoffBase, 2*time.Second)
	set(&c.JobBackoffMax, time.Minute)
	set(&c.AskTimeout, 10*time.Second)
	set(&c.PassivateAfter, 2*time.Minute)
	set(&c.CleanupInterval, time.Minute)
	set(&c.EventsInterval, time.Minute)
	set(&c.TaskRetention, 7*24*time.Hour)
	set(&c.IdempotencyRetention, 24*time.Hour)
	set(&c.BackupInterval, time.Hour)
	set(&c.SpaceInterval, time.Minute)
	set(&c.AllocationCheckInterval, time.Hour)
	if c.JobAttempts <= 0 {
		c.JobAttempts = messages.DefaultJobAttempts
	}
	if c.BackupKeep <= 0 {
		c.BackupKeep = 24
	}
	if c.Agent == nil {
		c.Agent = job.NoAgent{}
	}
	c.Identity.SetDefaults()
	set(&c.Nodes.HeartbeatInterval, HeartbeatInterval)
	set(&c.Nodes.GoneAfter, 10*time.Minute)
	if c.Nodes.Now == nil {
		c.Nodes.Now = time.Now
	}
}

// Gateway is the control plane's typed API over its actors and store.
type Gateway struct {
	cfg     Config
	st      *store.Store
	log     *slog.Logger
	rt      *system.Runtime
	vms     *actor.PID
	nodes   *actor.PID
	jobs    *actor.PID
	maint   *actor.PID
	started atomic.Bool
	closing sync.Once
	// id is the identity service: users, sessions, tokens, audit, rate
	// limits (identity.go delegates to it).
	id *identity.Service
	// enroll is the cluster CA, join tokens, enrollment and node
	// certificate authentication.
	enroll *enrollment.Service
	// hb caches the settings heartbeats answer with (heartbeat.go).
	hb heartbeatCache
	// replicas caches the replicas' agent URLs heartbeats answer with.
	replicas replicaCache
	// ov caches the view desired overlays are computed from (overlay.go).
	ov overlayCache
	// ownedMu guards owned, the guardian of the loops this replica runs
	// while it owns them (nil while it does not), and closed.
	ownedMu sync.Mutex
	owned   *actor.PID
	closed  bool
	// live is the liveness loop's view of the quorum (liveness.go).
	live livenessQuorum
	// pools caches the pool list heartbeat answers are made from (pools.go).
	pools poolCache
	// book holds the VM samples of the heartbeats this replica received
	// (metrics.go).
	book *node.Book
}

// Start brings up the actor system: the vms, jobs and maintenance guardians,
// the job dispatcher and the maintenance loops.
func Start(ctx context.Context, st *store.Store, cfg Config, log *slog.Logger) (*Gateway, error) {
	cfg.defaults()
	if cfg.Placer == nil {
		cfg.Placer = placement.New(st, cfg.Placement)
	}
	if log == nil {
		log = slog.Default()
	}
	ca, err := enrollment.LoadCA(ctx, st, cfg.Identity.Now())
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	id, err := identity.New(ctx, st, cfg.Identity, log)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	// Placement reads nodes' allocation documents, so a store written
	// before they existed gets them before anything is placed.
	if n, err := st.MigrateAllocations(ctx); err != nil {
		id.Close()
		return nil, fmt.Errorf("gateway: %w", err)
	} else if n > 0 {
		log.Info("built node allocation documents from the vm rows", "nodes", n)
	}
	// The default pool was implicit (each node's --pool-dir) before pools
	// were resources: a new cluster and an upgraded one both get it as a
	// real pool, once.
	if made, err := ensureDefaultPool(ctx, st); errors.Is(err, messages.ErrStorageFull) {
		// A full store must still boot (and then free space); the pool
		// is seeded at a later start.
		log.Warn("default storage pool not created: the store is full; it is created at a later start", "err", err)
	} else if err != nil {
		id.Close()
		return nil, fmt.Errorf("gateway: default pool: %w", err)
	} else if made {
		log.Info("default storage pool created (each node's --pool-dir)")
	}
	rt := system.NewRuntime(log)
	g := &Gateway{cfg: cfg, st: st, log: log, rt: rt, id: id}
	g.enroll = enrollment.New(enrollment.Config{Store: st, CA: ca, Log: log, Now: cfg.Identity.Now,
		HeartbeatInterval: cfg.Nodes.HeartbeatInterval, Audit: id.Audit, AuditFailure: id.AuditFailure,
		Membership: cfg.Membership, Version: cfg.Version})
	root := rt.System.Root

	placer := placement.New(st, cfg.Placement)
	vmDeps := vm.Deps{Runtime: rt, Store: st, Log: log, PassivateAfter: cfg.PassivateAfter, JobAttempts: cfg.JobAttempts,
		Schedulable: placer.Schedulable, Admit: placer.Admit}
	g.vms, err = root.SpawnNamed(system.NewGuardian(rt, "vm", func(id string) *actor.Props { return vm.Props(vmDeps, id) }, nil), "vms")
	if err != nil {
		rt.Stop()
		id.Close()
		return nil, fmt.Errorf("gateway: spawn vms guardian: %w", err)
	}
	g.book = node.NewBook()
	nodeDeps := node.Deps{Runtime: rt, Store: st, Log: log, VMs: g.vms, Book: g.book, Config: node.Config{
		Interval: cfg.Nodes.HeartbeatInterval, GoneAfter: cfg.Nodes.GoneAfter, Boot: cfg.Nodes.Now()}}
	if cfg.Nodes.Shared {
		nodeDeps.Config.StampEvery = cfg.Nodes.HeartbeatInterval
	}
	g.nodes, err = root.SpawnNamed(system.NewGuardian(rt, "node", func(id string) *actor.Props { return node.Props(nodeDeps, id) }, nil), "nodes")
	if err != nil {
		rt.Stop()
		id.Close()
		return nil, fmt.Errorf("gateway: spawn nodes guardian: %w", err)
	}
	jobDeps := job.Deps{Runtime: rt, Store: st, Log: log, Executor: job.Executor{Placer: cfg.Placer, Agent: cfg.Agent, Nodes: st}, VMs: g.vms,
		Config: job.Config{Replica: cfg.Replica, ClaimTTL: cfg.ClaimTTL, Resync: cfg.Resync,
			BackoffBase: cfg.JobBackoffBase, BackoffMax: cfg.JobBackoffMax, AskTimeout: cfg.AskTimeout}}
	g.jobs, err = root.SpawnNamed(system.NewGuardian(rt, "job", job.JobProps(jobDeps), func(ctx actor.Context) {
		if cfg.NoDispatch {
			return
		}
		if _, err := ctx.SpawnNamed(job.DispatcherProps(jobDeps), "dispatcher"); err != nil {
			panic(err)
		}
	}), "jobs")
	if err != nil {
		rt.Stop()
		id.Close()
		return nil, fmt.Errorf("gateway: spawn jobs guardian: %w", err)
	}
	local, owned := g.loops()
	g.maint, err = root.SpawnNamed(loopGuardian(rt, log, local), "maintenance")
	if err != nil {
		rt.Stop()
		id.Close()
		return nil, fmt.Errorf("gateway: spawn maintenance guardian: %w", err)
	}
	if cfg.Loops == nil {
		if err := g.startOwned(owned); err != nil {
			rt.Stop()
			id.Close()
			return nil, err
		}
	} else {
		cfg.Loops.Register("maintenance", func(ctx context.Context) {
			if err := g.startOwned(owned); err != nil {
				log.Warn("start the owned maintenance loops", "err", err)
				return
			}
			<-ctx.Done()
			g.stopOwned()
		})
	}
	g.started.Store(true)
	return g, nil
}

func loopGuardian(rt *system.Runtime, log *slog.Logger, loops []maintenance.Loop) *actor.Props {
	return system.NewGuardian(rt, "loop", nil, func(ctx actor.Context) {
		for _, l := range loops {
			if _, err := ctx.SpawnNamed(maintenance.Props(rt, log, l), l.Name); err != nil {
				panic(err)
			}
		}
	})
}

// startOwned starts the loops this replica runs while it owns them, unless
// the gateway is closing.
func (g *Gateway) startOwned(loops []maintenance.Loop) error {
	g.ownedMu.Lock()
	defer g.ownedMu.Unlock()
	if g.closed || g.owned != nil {
		return nil
	}
	pid, err := g.rt.System.Root.SpawnNamed(loopGuardian(g.rt, g.log, loops), "owned-maintenance")
	if err != nil {
		return fmt.Errorf("gateway: spawn owned maintenance guardian: %w", err)
	}
	g.owned = pid
	return nil
}

// stopOwned stops the owned loops and waits until they have stopped, so no
// run of them is under way once ownership may pass to another replica. A
// run's context ends with its actor.
func (g *Gateway) stopOwned() {
	g.ownedMu.Lock()
	defer g.ownedMu.Unlock()
	if g.owned != nil {
		_ = g.rt.System.Root.StopFuture(g.owned).Wait()
		g.owned = nil
	}
}

// loops are the maintenance loops: local ones every replica runs for itself,
// and owned ones that one replica runs for the cluster.
//
// Local: rereading the JWT key ring (each replica signs and verifies with
// its own copy) and the store's space (defragmentation is per member, and
// each member's file counts against its quota; the compaction and alarm
// disarming it may do are cluster-wide and idempotent).
func (g *Gateway) loops() (local, owned []maintenance.Loop) {
	c := g.cfg
	cleanup := maintenance.Cleanup(g.st, g.log, c.TaskRetention, c.IdempotencyRetention)
	sweeps := func(ctx context.Context) error {
		return errors.Join(cleanup(ctx), g.id.Cleanup(ctx), g.sweepJoinTokens(ctx))
	}
	local = []maintenance.Loop{{Name: "keyring", Interval: c.Identity.KeyRefresh, OnRun: c.OnMaintenance,
		Run: g.id.ReloadKeyRing}}
	if c.Space != nil {
		local = append(local, maintenance.Loop{Name: "storage", Interval: c.SpaceInterval, Immediate: true, OnRun: c.OnMaintenance,
			Run: maintenance.Storage(c.Space, sweeps, c.SpacePolicy, g.log)})
	}
	owned = []maintenance.Loop{{Name: "cleanup", Interval: c.CleanupInterval, OnRun: c.OnMaintenance, Run: sweeps},
		{Name: "keyrotation", Interval: c.Identity.KeyRefresh, OnRun: c.OnMaintenance, Run: g.id.RefreshKeyRing},
		{Name: "liveness", Interval: c.Nodes.HeartbeatInterval / 2, OnRun: c.OnMaintenance, Run: g.checkNodes},
		{Name: "events", Interval: c.EventsInterval, OnRun: c.OnMaintenance, Run: g.pruneEvents},
		{Name: "allocations", Interval: c.AllocationCheckInterval, OnRun: c.OnMaintenance, Run: g.checkAllocations},
	}
	if c.BackupDir != "" && c.Snapshot != nil && c.Prune != nil {
		owned = append(owned, maintenance.Loop{Name: "backup", Interval: c.BackupInterval, OnRun: c.OnMaintenance,
			Run: maintenance.Backup(c.Snapshot, c.Prune, c.BackupDir, c.BackupKeep, g.log)})
	}
	return local, owned
}

// Close stops the actor system and waits for its goroutines. Claims of this
// replica are released so another replica can take its jobs at once.
func (g *Gateway) Close() {
	g.closing.Do(g.close)
}

func (g *Gateway) close() {
	g.started.Store(false)
	g.ownedMu.Lock()
	g.closed = true
	g.ownedMu.Unlock()
	g.stopOwned()
	// Jobs first, and waited for, so the dispatcher revokes its lease while
	// etcd is still there: this replica's claims are released at once rather
	// than after the claim TTL.
	for _, pid := range []*actor.PID{g.jobs, g.maint, g.vms, g.nodes} {
		_ = g.rt.System.Root.StopFuture(pid).Wait()
	}
	g.rt.Stop()
	// Requests have drained (the HTTP server stops first): revoking the
	// lease of this replica's Idempotency-Key reservations frees any one
	// still held at once rather than after its TTL.
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := g.st.ReleaseIdempotencyLease(rctx); err != nil {
		g.log.Warn("revoke the idempotency lease", "err", err)
	}
	cancel()
	// Last, so the audit entries of the final requests are flushed while
	// etcd is still there.
	g.id.Close()
}

// Ready reports whether etcd answers and the actors have started.
func (g *Gateway) Ready(ctx context.Context) error {
	if !g.started.Load() {
		return messages.Errorf(messages.KindUnavailable, "not_ready", "actor system not started")
	}
	return g.st.Ready(ctx)
}

// askVM sends one command to a VM's actor and waits for its reply.
func (g *Gateway) askVM(ctx context.Context, id string, msg any) (messages.VMReply, error) {
	// The actor drops the command if it has not started it shortly before the
	// caller stops waiting, so a timed-out caller can retry without the first
	// attempt running later behind its back.
	deadline := time.Now().Add(g.cfg.AskTimeout * 9 / 10)
	// A write made for a request with an Idempotency-Key carries the
	// request's reservation, so the actor's commit is fenced by it.
	res, err := g.rt.System.Root.RequestFuture(g.vms, system.Deliver{ID: id, Msg: system.Deadlined{Msg: msg, Deadline: deadline,
		Reservation: store.ReservationFrom(ctx)}}, g.cfg.AskTimeout).Result()
	if err != nil {
		if errors.Is(err, actor.ErrTimeout) {
			return messages.VMReply{}, &messages.Error{Kind: messages.KindUnavailable, Code: "actor_timeout",
				Message: "the vm's actor did not answer in time; retry (with the same Idempotency-Key for writes)", Err: err}
		}
		return messages.VMReply{}, err
	}
	reply := res.(messages.VMReply)
	return reply, reply.Err
}

// checkAllocations is the allocations loop: every node's allocation
// document against the count of the VM rows, each drift logged and
// repaired. A drift means some writer changed a VM row without its node's
// document; until repaired, placement misjudges that node's room.
func (g *Gateway) checkAllocations(ctx context.Context) error {
	drift, repaired, err := g.st.RepairAllocations(ctx)
	if err != nil {
		return fmt.Errorf("check allocations: %w", err)
	}
	for _, d := range drift {
		g.log.Warn("node allocation document differs from its vm rows", "node", d.Node,
			"stored_vms", len(d.Stored.VMs), "stored_cpus", d.Stored.CPUs, "stored_memory_mib", d.Stored.MemoryMiB, "stored_disk_gib", d.Stored.DiskGiB,
			"counted_vms", len(d.Counted.VMs), "counted_cpus", d.Counted.CPUs, "counted_memory_mib", d.Counted.MemoryMiB, "counted_disk_gib", d.Counted.DiskGiB)
	}
	if len(drift) > repaired {
		g.log.Info("allocation documents left for the next check: vm rows changed during the count", "drifted", len(drift), "repaired", repaired)
	}
	return nil
}
