// Package node is the control plane's node actor: one actor per enrolled
// node that holds the node's last observed state in memory, moves its phase
// on heartbeats and liveness checks, and writes the row to etcd only when
// something other than the heartbeat time changed. The loop itself is
// actors/entity; this package is the node's behaviour.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/entity"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Config tunes liveness.
type Config struct {
	// Interval is the heartbeat interval agents are told to use.
	Interval time.Duration
	// GoneAfter is how long after its last heartbeat a node is gone.
	GoneAfter time.Duration
	// Boot is when this control plane started: after a restart the last
	// heartbeat of a node is unknown, and boot time stands in for it, so a
	// restart gives every node MissedIntervals intervals of grace.
	Boot time.Time
	// StampEvery, when set, has a heartbeat also write its time to the
	// node's row once the time written there is that old, even when
	// nothing else changed. With several replicas, an agent heartbeats
	// one of them, and the others only know the row: set to the interval,
	// the row's time is never more than about two intervals old while the
	// agent heartbeats, so another replica about to demote the node finds
	// the row changed under it (its write is a compare-and-set), reloads,
	// and sees the node alive. Zero (one replica): the row is written only
	// when something else changed.
	StampEvery time.Duration
}

// Deps are what a node actor needs from the outside.
type Deps struct {
	Runtime *system.Runtime
	Store   *store.Store
	Log     *slog.Logger
	Config  Config
	// VMs is the guardian of VM actors: what a node observes of its VMs is
	// told to them (nil: not told, in tests of the node alone).
	VMs *actor.PID
	// Book, when set, gets a copy of every node's samples (book.go).
	Book *Book
}

// maxQueue bounds the commands waiting for one node.
const maxQueue = 64

var errOverloaded = messages.Errorf(messages.KindUnavailable, "node_overloaded",
	"too many operations are waiting for this node; retry later")

// Props returns the props of the actor for node id. Node actors are not
// passivated while their node exists: nodes are few and heartbeat often, and
// the actor holds the last heartbeat time, which is not in etcd. They trust
// their state between commands (MaxStale -1): a node's heartbeats come to
// the replica its agent talks to, and every write is still a compare-and-set.
func Props(d Deps, id string) *actor.Props {
	cfg := entity.Config{Runtime: d.Runtime, Store: d.Store, Log: d.Log, Kind: "node", IDKey: "node_id",
		MaxQueue: maxQueue, Overloaded: errOverloaded, MaxStale: -1}
	return entity.Props(cfg, id, func() entity.Behaviour[messages.Node, Reply] {
		return &behaviour{deps: d, id: id}
	})
}

// plan is one node command's decision.
type plan = entity.Plan[messages.Node, Reply]

// behaviour plans the node's commands. The node itself is the loop's (its
// status in memory); the behaviour keeps what is never written: when the
// last heartbeat came and what it said of each VM.
type behaviour struct {
	deps Deps
	id   string
	// lastSeen is the last heartbeat this actor saw, or boot time (see Config).
	lastSeen time.Time
	// stamped is the heartbeat time last written to the row (StampEvery).
	stamped time.Time
	// observed is what the last heartbeat said of each VM, by id; a VM's
	// actor is told only when its observation changes. Empty after a start
	// or after the node went gone, so the next heartbeat tells every VM.
	observed map[string]messages.VMObserved
	// metrics are the VM samples of the last heartbeat (metrics.go).
	metrics Metrics
	// writtenPools are the pool reports as last written to the row: the
	// yardstick poolsMoved measures drift against (pools.go).
	writtenPools []messages.PoolStatus
}

var _ entity.Behaviour[messages.Node, Reply] = (*behaviour)(nil)

func (b *behaviour) Load(c context.Context) (*messages.Node, error) {
	return b.deps.Store.GetNode(c, b.id)
}

func (b *behaviour) Loaded(n *messages.Node) {
	if n == nil {
		return
	}
	// A reload after a failed write keeps the heartbeat seen here.
	if b.lastSeen.Before(b.deps.Config.Boot) {
		b.lastSeen = b.deps.Config.Boot
	}
	b.writtenPools = n.Status.Pools
	if t := n.Status.LastHeartbeatAt; t != nil {
		b.stamped = *t
		if t.After(b.lastSeen) {
			b.lastSeen = *t
		}
	}
}

func (b *behaviour) Command(msg any) bool {
	switch msg.(type) {
	case Heartbeat, CheckLiveness, Get, GetMetrics, SetCordoned, Delete, RenewCert:
		return true
	}
	return false
}

// Fresh: nodes are created by enrollment, never by their actor.
func (b *behaviour) Fresh(any) bool { return false }

func (b *behaviour) Fail(err error) Reply { return Reply{Err: err} }

// view is a copy of the node, safe to hand out.
func view(n *messages.Node) *messages.Node {
	if n == nil {
		return nil
	}
	// Fields are replaced, never changed in place, so a shallow copy is safe.
	c := *n
	return &c
}

// answer is every node reply: the node as it is after the command.
func answer(n *messages.Node) Reply { return Reply{Node: view(n)} }

// keep is the plan that answers with the node and writes nothing; next, when
// set, replaces the node in memory only.
func keep(next *messages.Node) plan { return plan{Next: next, Answer: answer} }

// update is the plan that writes next over the node's row, with the
// lifecycle events of the change (nil ones skipped) in its transaction.
func update(next *messages.Node, evs ...*messages.Event) plan {
	return plan{Txn: store.AddEvents(store.UpdateNode(store.NewTxn(), next), evs...), Next: next, Answer: answer}
}

func (b *behaviour) Plan(cur *messages.Node, cmd any) plan {
	if cur == nil {
		return plan{Err: messages.NotFound("node", b.id)}
	}
	switch m := cmd.(type) {
	case Get:
		return keep(nil)
	case GetMetrics:
		return b.getMetrics()
	case Heartbeat:
		return b.heartbeat(cur, m)
	case CheckLiveness:
		return b.checkLiveness(cur, m.Now, m.Since)
	case SetCordoned:
		if cur.Cordoned == m.Cordoned {
			return keep(nil)
		}
		next := *cur
		next.Cordoned = m.Cordoned
		next.UpdatedAt = m.Now.UTC()
		return update(&next)
	case Delete:
		n := *cur
		return plan{Txn: store.DeleteNode(store.NewTxn(), &n), Gone: true, Answer: answer}
	case RenewCert:
		next := *cur
		next.PrevCertFingerprint = m.Presented
		next.CertFingerprint, next.CertNotAfter = m.Fingerprint, m.NotAfter.UTC()
		next.UpdatedAt = m.Now.UTC()
		log := b.deps.Log
		p := update(&next)
		p.After = func() {
			log.Info("node certificate renewed", "node", next.Name, "cert_fingerprint", m.Fingerprint,
				"not_after", next.CertNotAfter)
		}
		return p
	}
	return keep(nil)
}

// heartbeat records the observed state in memory and writes the row only
// when something other than the heartbeat time changed.
func (b *behaviour) heartbeat(cur *messages.Node, m Heartbeat) plan {
	now := m.Now.UTC()
	b.lastSeen = now
	next := *cur
	hb := m.Observed
	capacity := hb.Capacity
	next.Phase = messages.NodeReady
	next.Arch, next.AgentVersion, next.Endpoint = hb.Arch, hb.AgentVersion, hb.Endpoint
	if next.PrevCertFingerprint != "" && m.Fingerprint == next.CertFingerprint {
		next.PrevCertFingerprint = "" // the renewed certificate is in use
	}
	next.Status = messages.NodeStatus{
		LastHeartbeatAt: &now,
		Capacity:        &capacity,
		QEMUVersions:    nilIfEmpty(hb.QEMUVersions),
		Pools:           nilIfEmpty(hb.Pools),
		VMCount:         len(hb.VMs),
		ImageCount:      len(hb.Images),
		Overlay:         overlayOf(hb.Overlay),
	}
	// A report over the agent's size budget leaves some out and counts
	// them; nothing here reads an absent VM or image as gone.
	next.Status.VMCount += max(hb.OmittedVMs, 0)
	next.Status.ImageCount += max(hb.OmittedImages, 0)
	if o := next.Status.Overlay; o != nil && o.Error != "" {
		next.Status.Message = "overlay: " + o.Error
	}
	next.Status.HostPrefixes = nilIfEmpty(hb.HostPrefixes)
	next.Status.Conditions = hostConditions(cur.Status.Conditions, hb.Overlay, now)
	// Told whatever the write's outcome: what the node observes of its VMs
	// is news to them either way, and telling is idempotent should the
	// heartbeat be planned again.
	b.tellVMs(next.Name, hb.VMs)
	b.keepMetrics(hb, now)
	// A node joins the mesh when it first reports its key: it gets its
	// tunnel address in the write that records the key. A node without a
	// data plane never takes one.
	join := next.Status.Overlay != nil && next.Status.Overlay.PublicKey != "" &&
		(next.TunnelIP == "" || outside(next.TunnelIP, m.Supernet))
	stamp := b.deps.Config.StampEvery > 0 && now.Sub(b.stamped) >= b.deps.Config.StampEvery
	moved := join || changed(cur, &next) || poolsMoved(b.writtenPools, next.Status.Pools)
	if !moved && !stamp {
		return keep(&next)
	}
	if cur.Phase != messages.NodeReady {
		b.deps.Log.Info("node ready", "node", next.Name, "was", cur.Phase)
	}
	if moved {
		// A heartbeat time alone is not a change of the node.
		next.UpdatedAt = now
	}
	ev := messages.NodeTransition(cur.Phase, &next, now)
	var p plan
	if join {
		p = b.joinOverlay(&next, ev)
	} else {
		p = update(&next, ev)
	}
	pools := next.Status.Pools
	p.After = func() { b.stamped, b.writtenPools = now, pools }
	return p
}

// checkLiveness demotes a node whose heartbeats stopped. Pending nodes (never
// heartbeated) and gone nodes stay as they are. Silence counts from the last
// heartbeat, or from since when that is later.
func (b *behaviour) checkLiveness(cur *messages.Node, now, since time.Time) plan {
	cfg := b.deps.Config
	silent := now.Sub(b.lastSeen)
	if since.After(b.lastSeen) {
		silent = now.Sub(since)
	}
	var phase string
	switch cur.Phase {
	case messages.NodeReady:
		if silent >= MissedIntervals*cfg.Interval {
			phase = messages.NodeUnreachable
		}
	case messages.NodeUnreachable:
		if silent >= cfg.GoneAfter {
			phase = messages.NodeGone
		}
	}
	if phase == "" {
		return keep(nil)
	}
	next := *cur
	next.Phase = phase
	b.metrics = Metrics{} // a silent node's last samples would mislead a top
	b.deps.Book.put(b.id, b.metrics)
	next.Status.Message = fmt.Sprintf("no heartbeat since %s", b.lastSeen.UTC().Format(time.RFC3339))
	next.UpdatedAt = now.UTC()
	p := update(&next, messages.NodeTransition(cur.Phase, &next, now))
	// Said once committed: with several replicas the write may find the
	// row changed (another replica wrote a fresher heartbeat time), and
	// the demotion is planned again against it.
	log, lastSeen := b.deps.Log, b.lastSeen
	p.After = func() {
		log.Warn("node "+phase, "node", cur.Name, "last_heartbeat", lastSeen.UTC(), "silent_for", silent.Round(time.Second))
		if phase == messages.NodeGone {
			b.vmsLost(&next)
		}
	}
	return p
}

// changed reports whether anything but the heartbeat time and the overlay's
// reconcile outcome (in memory only: an agent that keeps failing with a
// changing message must not write the row on every heartbeat) differs.
func changed(old, next *messages.Node) bool {
	o, n := *old, *next
	o.Status.LastHeartbeatAt, n.Status.LastHeartbeatAt = nil, nil
	o.UpdatedAt, n.UpdatedAt = time.Time{}, time.Time{}
	o.Status.Message, n.Status.Message = "", ""
	o.Status.Overlay, n.Status.Overlay = overlayIdentity(o.Status.Overlay), overlayIdentity(n.Status.Overlay)
	o.Status.QEMUVersions = nilIfEmpty(o.Status.QEMUVersions)
	// Pools are compared against what was last written (poolsMoved): a
	// disk's used bytes drift on every beat.
	o.Status.Pools, n.Status.Pools = nil, nil
	return !reflect.DeepEqual(o, n)
}

// outside reports a tunnel address that is not in supernet: the settings
// moved the supernet since the address was allocated.
func outside(tunnelIP, supernet string) bool {
	p, err := netip.ParsePrefix(supernet)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(tunnelIP)
	return err == nil && !p.Contains(ip)
}

// hostConditions are the node's conditions after a heartbeat: the
// HostNetworkConflict condition follows the conflicts the agent reports
// (set False once a data plane reports none, absent without a data plane),
// keeping its transition time while its status holds.
func hostConditions(prev []messages.Condition, o *messages.NodeOverlay, now time.Time) []messages.Condition {
	var out []messages.Condition
	var old *messages.Condition
	for i, c := range prev {
		if c.Type == messages.NodeConditionHostNetworkConflict {
			old = &prev[i]
			continue
		}
		out = append(out, c)
	}
	if o != nil {
		out = append(out, messages.HostNetworkCondition(o.Conflicts, old, now))
	}
	return out
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// overlayOf copies a reported overlay, so the node never shares memory with
// the request it came in.
func overlayOf(o *messages.NodeOverlay) *messages.NodeOverlay {
	if o == nil {
		return nil
	}
	c := *o
	return &c
}

// overlayIdentity is what of an overlay is worth a write: key, endpoint and
// implementation.
func overlayIdentity(o *messages.NodeOverlay) *messages.NodeOverlay {
	if o == nil {
		return nil
	}
	return &messages.NodeOverlay{PublicKey: o.PublicKey, Endpoint: o.Endpoint, WireGuard: o.WireGuard, TunnelOffload: o.TunnelOffload}
}

// joinOverlay commits next with a tunnel address from the settings'
// overlay supernet, claimed in the same transaction. When the supernet is
// full the node is written without one (and says so); its next heartbeat
// tries again, and a full supernet never stops the node's heartbeats.
func (b *behaviour) joinOverlay(next *messages.Node, ev *messages.Event) plan {
	st, log := b.deps.Store, b.deps.Log
	return plan{Write: func(c context.Context) (plan, error) {
		set, err := st.Settings(c)
		if err == nil {
			err = st.UpdateNodeWithTunnelIP(c, next, set.OverlaySupernet, ev)
		}
		if errors.Is(err, store.ErrTunnelIPsExhausted) {
			log.Warn("no tunnel address for node", "node", next.Name, "supernet", set.OverlaySupernet)
			next.Status.Message = "overlay: " + store.ErrTunnelIPsExhausted.Message
			err = st.Commit(c, store.AddEvents(store.UpdateNode(store.NewTxn(), next), ev))
		}
		if err != nil {
			return plan{}, err
		}
		if next.TunnelIP != "" {
			log.Info("node joins the overlay", "node", next.Name, "tunnel_ip", next.TunnelIP,
				"public_key", next.Status.Overlay.PublicKey, "endpoint", next.Status.Overlay.Endpoint)
		}
		return keep(next), nil
	}}
}
