package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/overlayplan"
	"github.com/otherix/otherix/persistence/store"
)

// overlayViewTTL is how long the overlay view (nodes, networks and VM NICs,
// read from etcd) serves heartbeats before it is rebuilt, and so how stale
// a node's desired overlay can be: a peer that just joined, a VM just placed
// or deleted, reach other nodes' peer sets and forwarding databases at most
// this much plus one rebuild later than etcd has them. That is fine: agents
// reconcile the whole data plane on every heartbeat, so a late entry is
// filled at the next beat, and the heartbeat interval (30 s) is a larger
// delay anyway. In exchange a heartbeat costs map lookups, not three prefix
// reads (issue #4: 333 heartbeats/s must stay well under 30 % of a core).
const overlayViewTTL = heartbeatCacheTTL

// overlayCache holds the current overlay view. Readers never wait for a
// rebuild when a view exists: one caller rebuilds an expired view while the
// others go on with the old one. The zero value is ready.
type overlayCache struct {
	view    atomic.Pointer[overlayView]
	buildMu sync.Mutex
	// expired forces the next get to rebuild (tests).
	expired atomic.Bool
}

// overlayView is one loaded overlayplan.View and when it expires.
type overlayView struct {
	plan  *overlayplan.View
	until time.Time // wall clock
}

// expire makes the next heartbeat rebuild the view.
func (c *overlayCache) expire() { c.expired.Store(true) }

// get returns a live view, rebuilding it when expired.
func (c *overlayCache) get(ctx context.Context, st *store.Store) (*overlayView, error) {
	fresh := func(v *overlayView) bool { return v != nil && !c.expired.Load() && time.Now().Before(v.until) }
	v := c.view.Load()
	if fresh(v) {
		return v, nil
	}
	if v != nil && !c.expired.Load() {
		if !c.buildMu.TryLock() {
			return v, nil // another heartbeat is rebuilding it
		}
	} else {
		c.buildMu.Lock()
	}
	defer c.buildMu.Unlock()
	if cur := c.view.Load(); fresh(cur) {
		return cur, nil // rebuilt while we waited
	}
	c.expired.Store(false)
	var prev *overlayplan.View
	if v != nil {
		prev = v.plan
	}
	nv, err := buildOverlayView(ctx, st, prev)
	if err != nil {
		if v != nil {
			return v, nil // the old view beats no overlay; the next heartbeat retries
		}
		return nil, err
	}
	c.view.Store(nv)
	return nv, nil
}

// buildOverlayView reads every node, network and VM. prev is the view it
// replaces, or nil.
func buildOverlayView(ctx context.Context, st *store.Store, prev *overlayplan.View) (*overlayView, error) {
	v := &overlayView{plan: overlayplan.NewView(), until: time.Now().Add(overlayViewTTL)}
	err := listAll(ctx, func(p store.Page) ([]*messages.Node, string, error) {
		return store.List[messages.Node](ctx, st, store.Nodes, p)
	}, v.plan.AddNode)
	if err != nil {
		return nil, fmt.Errorf("overlay view: list nodes: %w", err)
	}
	err = listAll(ctx, func(p store.Page) ([]*messages.Network, string, error) {
		return st.ListNetworks(ctx, p)
	}, v.plan.AddNetwork)
	if err != nil {
		return nil, fmt.Errorf("overlay view: list networks: %w", err)
	}
	// After the networks: a VM's NICs count only on networks the view has.
	err = listAll(ctx, func(p store.Page) ([]*messages.VM, string, error) {
		return st.ListVMs(ctx, "", p)
	}, v.plan.AddVM)
	if err != nil {
		return nil, fmt.Errorf("overlay view: list vms: %w", err)
	}
	if err := v.plan.Seal(prev); err != nil {
		return nil, fmt.Errorf("overlay view: %w", err)
	}
	return v, nil
}

// listAll walks every page of a list.
func listAll[T any](ctx context.Context, list func(store.Page) ([]T, string, error), each func(T)) error {
	page := store.Page{Limit: store.MaxPageSize}
	for {
		items, next, err := list(page)
		if err != nil {
			return err
		}
		for _, it := range items {
			each(it)
		}
		if next == "" || ctx.Err() != nil {
			return ctx.Err()
		}
		page.Cursor = next
	}
}

// desiredOverlay is n's overlay for its heartbeat response
// (overlayplan.View.For): nil until n has reported a WireGuard key and holds
// a tunnel IP. port is the settings' WireGuard port.
func (g *Gateway) desiredOverlay(ctx context.Context, n *messages.Node, port int) (*messages.DesiredOverlay, error) {
	if n == nil || n.TunnelIP == "" || n.Status.Overlay == nil || n.Status.Overlay.PublicKey == "" {
		return nil, nil // no view needed
	}
	v, err := g.ov.get(ctx, g.st)
	if err != nil {
		return nil, err
	}
	return v.plan.For(n, port), nil
}
