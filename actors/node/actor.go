// Package node is the control plane's node actor: one actor per enrolled
// node that holds the node's last observed state in memory, moves its phase
// on heartbeats and liveness checks, and writes the row to etcd only when
// something other than the heartbeat time changed.
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
}

// Props returns the props of the actor for node id. Node actors are not
// passivated while their node exists: nodes are few and heartbeat often, and
// the actor holds the last heartbeat time, which is not in etcd.
func Props(d Deps, id string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &nodeActor{deps: d, id: id} })
}

// nodeActor has one etcd operation in flight at most; commands that arrive
// meanwhile wait in order.
type nodeActor struct {
	deps   Deps
	id     string
	node   *messages.Node // nil when the node does not exist; status in memory
	loaded bool
	busy   bool
	queue  []queued
	// lastSeen is the last heartbeat this actor saw, or boot time (see Config).
	lastSeen time.Time
	// observed is what the last heartbeat said of each VM, by id; a VM's
	// actor is told only when its observation changes. Empty after a start
	// or after the node went gone, so the next heartbeat tells every VM.
	observed map[string]messages.VMObserved
}

type queued struct {
	msg    any
	sender *actor.PID
}

// loaded and committed come back from I/O; by ignores results meant for a
// previous instance of the actor (after a restart).
type loaded struct {
	by   *nodeActor
	node *messages.Node
	err  error
}

type committed struct {
	by     *nodeActor
	sender *actor.PID
	next   *messages.Node
	gone   bool
	err    error
}

func (a *nodeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case loaded:
		if m.by != a {
			return
		}
		a.busy = false
		if m.err != nil && messages.KindOf(m.err) != messages.KindNotFound {
			a.deps.Log.Warn("load node", "node_id", a.id, "err", m.err)
			for _, q := range a.queue {
				a.reply(ctx, q.sender, Reply{Err: m.err})
			}
			a.queue = nil
			return
		}
		a.node = m.node
		a.loaded = true
		if a.node != nil {
			// A reload after a failed write keeps the heartbeat seen here.
			if a.lastSeen.Before(a.deps.Config.Boot) {
				a.lastSeen = a.deps.Config.Boot
			}
			if t := a.node.Status.LastHeartbeatAt; t != nil && t.After(a.lastSeen) {
				a.lastSeen = *t
			}
		}
		a.drain(ctx)
	case committed:
		if m.by != a {
			return
		}
		a.busy = false
		if m.err != nil {
			a.reply(ctx, m.sender, Reply{Err: m.err})
			// The row may have changed under us: read it again.
			a.loaded = false
			a.load(ctx)
			return
		}
		wasGone := a.node != nil && a.node.Phase == messages.NodeGone
		if m.gone {
			a.node = nil
		} else {
			a.node = m.next
		}
		if a.node != nil && a.node.Phase == messages.NodeGone && !wasGone {
			a.vmsLost(ctx)
		}
		a.reply(ctx, m.sender, Reply{Node: a.view()})
		a.drain(ctx)
	case system.Crashed:
		panic(m.Reason)
	case system.StopIfIdle:
		if !a.busy && len(a.queue) == 0 {
			ctx.Stop(ctx.Self())
		} else {
			ctx.Send(ctx.Parent(), system.StillBusy{ID: a.id})
		}
	case Heartbeat, CheckLiveness, Get, SetCordoned, Delete, RenewCert:
		if len(a.queue) >= maxQueue {
			a.reply(ctx, ctx.Sender(), Reply{Err: errOverloaded})
			return
		}
		a.queue = append(a.queue, queued{msg: m, sender: ctx.Sender()})
		if !a.loaded && !a.busy {
			a.load(ctx)
			return
		}
		a.drain(ctx)
	}
}

// maxQueue bounds the commands waiting for one node.
const maxQueue = 64

var errOverloaded = messages.Errorf(messages.KindUnavailable, "node_overloaded",
	"too many operations are waiting for this node; retry later")

// reply answers sender, if there is one: the liveness loop may tell without
// asking.
func (a *nodeActor) reply(ctx actor.Context, sender *actor.PID, r Reply) {
	if sender != nil {
		ctx.Send(sender, r)
	}
}

func (a *nodeActor) load(ctx actor.Context) {
	a.busy = true
	st, id := a.deps.Store, a.id
	a.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		n, err := st.GetNode(c, id)
		return loaded{by: a, node: n, err: err}
	})
}

func (a *nodeActor) drain(ctx actor.Context) {
	for !a.busy && len(a.queue) > 0 {
		q := a.queue[0]
		a.queue = a.queue[1:]
		a.handle(ctx, q)
	}
	// An actor for a node that does not exist is not worth keeping.
	if a.node == nil && !a.busy && len(a.queue) == 0 {
		ctx.Send(ctx.Parent(), system.Passivate{ID: a.id})
	}
}

// view is a copy of the node with the in-memory status, safe to hand out.
func (a *nodeActor) view() *messages.Node {
	if a.node == nil {
		return nil
	}
	// Fields are replaced, never changed in place, so a shallow copy is safe.
	n := *a.node
	return &n
}

func (a *nodeActor) handle(ctx actor.Context, q queued) {
	if a.node == nil {
		a.reply(ctx, q.sender, Reply{Err: messages.NotFound("node", a.id)})
		return
	}
	switch m := q.msg.(type) {
	case Get:
		a.reply(ctx, q.sender, Reply{Node: a.view()})
	case Heartbeat:
		a.heartbeat(ctx, q.sender, m)
	case CheckLiveness:
		a.checkLiveness(ctx, q.sender, m.Now)
	case SetCordoned:
		if a.node.Cordoned == m.Cordoned {
			a.reply(ctx, q.sender, Reply{Node: a.view()})
			return
		}
		next := *a.node
		next.Cordoned = m.Cordoned
		next.UpdatedAt = m.Now.UTC()
		a.write(ctx, q.sender, store.UpdateNode(store.NewTxn(), &next), &next, false)
	case Delete:
		n := *a.node
		a.write(ctx, q.sender, store.DeleteNode(store.NewTxn(), &n), nil, true)
	case RenewCert:
		next := *a.node
		next.PrevCertFingerprint = m.Presented
		next.CertFingerprint, next.CertNotAfter = m.Fingerprint, m.NotAfter.UTC()
		next.UpdatedAt = m.Now.UTC()
		a.deps.Log.Info("node certificate renewed", "node", next.Name, "cert_fingerprint", m.Fingerprint,
			"not_after", next.CertNotAfter)
		a.write(ctx, q.sender, store.UpdateNode(store.NewTxn(), &next), &next, false)
	}
}

// heartbeat records the observed state in memory and writes the row only
// when something other than the heartbeat time changed.
func (a *nodeActor) heartbeat(ctx actor.Context, sender *actor.PID, m Heartbeat) {
	now := m.Now.UTC()
	a.lastSeen = now
	next := *a.node
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
	next.Status.Conditions = hostConditions(a.node.Status.Conditions, hb.Overlay, now)
	a.tellVMs(ctx, next.Name, hb.VMs)
	// A node joins the mesh when it first reports its key: it gets its
	// tunnel address in the write that records the key. A node without a
	// data plane never takes one.
	join := next.Status.Overlay != nil && next.Status.Overlay.PublicKey != "" &&
		(next.TunnelIP == "" || outside(next.TunnelIP, m.Supernet))
	if !join && !changed(a.node, &next) {
		a.node = &next
		a.reply(ctx, sender, Reply{Node: a.view()})
		return
	}
	if a.node.Phase != messages.NodeReady {
		a.deps.Log.Info("node ready", "node", next.Name, "was", a.node.Phase)
	}
	next.UpdatedAt = now
	if join {
		a.writeTunnelIP(ctx, sender, &next)
		return
	}
	a.write(ctx, sender, store.UpdateNode(store.NewTxn(), &next), &next, false)
}

// checkLiveness demotes a node whose heartbeats stopped. Pending nodes (never
// heartbeated) and gone nodes stay as they are.
func (a *nodeActor) checkLiveness(ctx actor.Context, sender *actor.PID, now time.Time) {
	cfg := a.deps.Config
	silent := now.Sub(a.lastSeen)
	var phase string
	switch a.node.Phase {
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
		a.reply(ctx, sender, Reply{Node: a.view()})
		return
	}
	a.deps.Log.Warn("node "+phase, "node", a.node.Name, "last_heartbeat", a.lastSeen.UTC(), "silent_for", silent.Round(time.Second))
	next := *a.node
	next.Phase = phase
	next.Status.Message = fmt.Sprintf("no heartbeat since %s", a.lastSeen.UTC().Format(time.RFC3339))
	next.UpdatedAt = now.UTC()
	a.write(ctx, sender, store.UpdateNode(store.NewTxn(), &next), &next, false)
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
	o.Status.QEMUVersions, o.Status.Pools = nilIfEmpty(o.Status.QEMUVersions), nilIfEmpty(o.Status.Pools)
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

// write commits t off the actor goroutine; next is the node after it (nil
// with gone when deleted).
func (a *nodeActor) write(ctx actor.Context, sender *actor.PID, t *store.Txn, next *messages.Node, gone bool) {
	a.busy = true
	st := a.deps.Store
	a.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		err := st.Commit(c, t)
		return committed{by: a, sender: sender, next: next, gone: gone, err: err}
	})
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

// writeTunnelIP commits next with a tunnel address from the settings'
// overlay supernet, claimed in the same transaction. When the supernet is
// full the node is written without one (and says so); its next heartbeat
// tries again, and a full supernet never stops the node's heartbeats.
func (a *nodeActor) writeTunnelIP(ctx actor.Context, sender *actor.PID, next *messages.Node) {
	a.busy = true
	st, log := a.deps.Store, a.deps.Log
	a.deps.Runtime.Go(ctx.Self(), func(c context.Context) any {
		set, err := st.Settings(c)
		if err == nil {
			err = st.UpdateNodeWithTunnelIP(c, next, set.OverlaySupernet)
		}
		if errors.Is(err, store.ErrTunnelIPsExhausted) {
			log.Warn("no tunnel address for node", "node", next.Name, "supernet", set.OverlaySupernet)
			next.Status.Message = "overlay: " + store.ErrTunnelIPsExhausted.Message
			err = st.Commit(c, store.UpdateNode(store.NewTxn(), next))
		}
		if err == nil && next.TunnelIP != "" {
			log.Info("node joins the overlay", "node", next.Name, "tunnel_ip", next.TunnelIP,
				"public_key", next.Status.Overlay.PublicKey, "endpoint", next.Status.Overlay.Endpoint)
		}
		return committed{by: a, sender: sender, next: next, err: err}
	})
}
