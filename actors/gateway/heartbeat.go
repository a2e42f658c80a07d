package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Heartbeat authenticates an agent by its client certificate (the node it
// names must be enrolled, with this very certificate recorded, and the
// certificate must chain to the cluster CA: enrollment.Service.Authenticate),
// hands the observed state to the node's actor and answers the desired state
// and the interval to use. The desired state carries the node's overlay once
// it has reported a WireGuard key and holds a tunnel IP (overlayplan, loaded
// by overlay.go), and only its revision when the heartbeat says the agent
// holds that revision already.
func (g *Gateway) Heartbeat(ctx context.Context, cert *x509.Certificate, hb messages.Heartbeat) (*messages.HeartbeatResponse, error) {
	now := g.cfg.Nodes.Now()
	who, err := g.enroll.Authenticate(ctx, cert, now, "heartbeat refused")
	if err != nil {
		return nil, err
	}
	id, name, fp := who.ID, who.Name, who.Fingerprint
	if err := g.enroll.CheckAgentVersion(name, hb.AgentVersion); err != nil {
		return nil, err // logged once per node and version by the check
	}
	refuse := func(e *messages.Error, detail ...any) (*messages.HeartbeatResponse, error) {
		g.log.Warn("heartbeat refused", append([]any{"node", name, "reason", e.Code}, detail...)...)
		return nil, e
	}
	if hb.Endpoint != "" {
		// The control plane dials this URL with its client certificate:
		// only https is accepted. An agent without one is simply not
		// schedulable.
		var me *messages.Error
		if err := messages.ValidateEndpoint("endpoint", hb.Endpoint); errors.As(err, &me) {
			return refuse(me, "endpoint", hb.Endpoint)
		}
	}
	var me *messages.Error
	if err := messages.ValidateNodeOverlay(hb.Overlay); errors.As(err, &me) {
		return refuse(me, "overlay_endpoint", hb.Overlay.Endpoint)
	}
	if err := messages.ValidateHostPrefixes(hb.HostPrefixes); errors.As(err, &me) {
		return refuse(me, "host_prefixes", len(hb.HostPrefixes))
	}
	if err := messages.ValidatePoolReports(hb.Pools); errors.As(err, &me) {
		return refuse(me, "pools", len(hb.Pools))
	}
	settings, err := g.hb.settings(ctx, g.st)
	if err != nil {
		return nil, err
	}
	n, err := g.askNode(id, node.Heartbeat{Observed: hb, Now: now, Fingerprint: fp, Supernet: settings.OverlaySupernet})
	if err != nil {
		if messages.KindOf(err) == messages.KindNotFound {
			g.enroll.Forget(name)
			return refuse(enrollment.ErrUnknownNode) // deleted meanwhile
		}
		return nil, err
	}
	overlay, err := g.desiredOverlay(ctx, n, settings.WireGuardPort)
	if err != nil {
		return nil, err
	}
	pools, err := g.desiredPools(ctx, name)
	if err != nil {
		return nil, err
	}
	desired := messages.DesiredState{Settings: settings, Overlay: overlay, Pools: pools}
	if overlay != nil {
		desired.OverlayRevision = overlay.Revision
		if hb.OverlayRevision == overlay.Revision {
			desired.Overlay = nil // the agent has it
		}
	}
	secs := int(g.cfg.Nodes.HeartbeatInterval / time.Second)
	return &messages.HeartbeatResponse{IntervalSeconds: max(secs, 1), Desired: desired,
		ReplicaURLs: g.replicas.agentURLs(ctx, g.st)}, nil
}

// heartbeatCacheTTL is how long a heartbeat reuses the settings document;
// settings reach agents within it.
const heartbeatCacheTTL = 5 * time.Second

// heartbeatCache holds the settings document heartbeats answer with. The
// zero value is ready. (Node authentication has its own cache, in package
// enrollment.)
type heartbeatCache struct {
	mu       sync.Mutex
	set      messages.Settings
	setUntil time.Time
}

func (c *heartbeatCache) settings(ctx context.Context, st *store.Store) (messages.Settings, error) {
	c.mu.Lock()
	if time.Now().Before(c.setUntil) {
		s := c.set
		c.mu.Unlock()
		return s, nil
	}
	c.mu.Unlock()
	s, err := st.Settings(ctx)
	if err != nil {
		return s, err
	}
	c.mu.Lock()
	c.set, c.setUntil = s, time.Now().Add(heartbeatCacheTTL)
	c.mu.Unlock()
	return s, nil
}

// ListNodes lists enrolled nodes in enrollment order. Each row is merged with
// its actor's in-memory status (the last heartbeat time is held there, not
// written on every heartbeat); a node whose actor does not answer is listed
// as its row says. Actors are spawned on demand: nodes are few, and the
// liveness loop keeps one per node anyway.
func (g *Gateway) ListNodes(ctx context.Context, page store.Page) ([]*messages.Node, string, error) {
	nodes, next, err := g.st.ListNodes(ctx, page)
	if err != nil {
		return nil, "", err
	}
	for i, n := range nodes {
		if live, err := g.askNode(n.ID, node.Get{}); err == nil && live != nil {
			nodes[i] = live
		}
	}
	return nodes, next, nil
}

// GetNode loads a node by name with its actor's in-memory status.
func (g *Gateway) GetNode(ctx context.Context, name string) (*messages.Node, error) {
	n, err := g.nodeByName(ctx, name)
	if err != nil {
		return nil, err
	}
	live, err := g.askNode(n.ID, node.Get{})
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("node", name)
	}
	return live, err
}

// Cordon marks a node unschedulable; Uncordon undoes it. Both are
// synchronous and idempotent.
func (g *Gateway) Cordon(ctx context.Context, name string) (*messages.Node, error) {
	return g.setCordoned(ctx, name, true)
}

// Uncordon makes a cordoned node schedulable again.
func (g *Gateway) Uncordon(ctx context.Context, name string) (*messages.Node, error) {
	return g.setCordoned(ctx, name, false)
}

func (g *Gateway) setCordoned(ctx context.Context, name string, cordoned bool) (*messages.Node, error) {
	n, err := g.nodeByName(ctx, name)
	if err != nil {
		return nil, err
	}
	live, err := g.askNode(n.ID, node.SetCordoned{Cordoned: cordoned, Now: g.cfg.Nodes.Now()})
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("node", name)
	}
	return live, err
}

// errNodeHasVMs refuses to delete a node VMs are placed on.
func errNodeHasVMs(name string, count int) *messages.Error {
	return messages.Errorf(messages.KindConflict, "node_has_vms",
		"node %s has %d vm(s) placed on it; drain it first or delete with force", name, count).WithDetail("vms", count)
}

// DeleteNode removes a node: its certificate stops being accepted at once.
// Unless force is set it is refused while any VM's status names the node.
// The check lists every VM, which is fine at today's scale; a VMs-by-node
// index replaces the scan when clusters grow (placement scans too).
func (g *Gateway) DeleteNode(ctx context.Context, name string, force bool) error {
	n, err := g.nodeByName(ctx, name)
	if err != nil {
		return err
	}
	if !force {
		count, err := g.vmsOnNode(ctx, name)
		if err != nil {
			return err
		}
		if count > 0 {
			return errNodeHasVMs(name, count)
		}
	}
	_, err = g.askNode(n.ID, node.Delete{})
	if messages.KindOf(err) == messages.KindNotFound {
		return messages.NotFound("node", name)
	}
	if err == nil {
		g.log.Info("node deleted", "node", name, "id", n.ID, "force", force)
	}
	return err
}

func (g *Gateway) vmsOnNode(ctx context.Context, name string) (int, error) {
	count := 0
	page := store.Page{Limit: 500}
	for {
		vms, next, err := g.st.ListVMs(ctx, "", page)
		if err != nil {
			return 0, err
		}
		for _, v := range vms {
			if v.Status.Node == name || v.Spec.Node == name {
				count++
			}
		}
		if next == "" {
			return count, nil
		}
		page.Cursor = next
	}
}

func (g *Gateway) nodeByName(ctx context.Context, name string) (*messages.Node, error) {
	if messages.ValidateName("name", name) != nil {
		return nil, messages.NotFound("node", name)
	}
	return g.st.NodeByName(ctx, name)
}

// checkNodes is the liveness loop: every node's actor checks whether its
// heartbeats stopped. It waits for the answers, so one run is one pass.
func (g *Gateway) checkNodes(ctx context.Context) error {
	now := g.cfg.Nodes.Now()
	since, ok := g.heardSince(now)
	if !ok {
		return nil
	}
	page := store.Page{Limit: 500}
	for {
		// Ids only, and told rather than asked: at 10,000 nodes, decoding
		// every row and a future (with its timer) per node every pass were
		// a tenth of the control plane's heartbeat CPU. A node actor logs
		// its own failed writes.
		ids, next, err := g.st.NodeIDs(ctx, page)
		if err != nil {
			return err
		}
		for _, id := range ids {
			g.rt.System.Root.Send(g.nodes, system.Deliver{ID: id, Msg: node.CheckLiveness{Now: now, Since: since}})
		}
		if next == "" {
			return nil
		}
		page.Cursor = next
	}
}

// askNode sends one command to a node's actor and waits for its reply.
func (g *Gateway) askNode(id string, msg any) (*messages.Node, error) {
	res, err := g.rt.System.Root.RequestFuture(g.nodes, system.Deliver{ID: id, Msg: msg}, g.cfg.AskTimeout).Result()
	if err != nil {
		if errors.Is(err, actor.ErrTimeout) {
			return nil, &messages.Error{Kind: messages.KindUnavailable, Code: "actor_timeout",
				Message: "the node's actor did not answer in time; retry", Err: err}
		}
		return nil, err
	}
	r := res.(node.Reply)
	return r.Node, r.Err
}
