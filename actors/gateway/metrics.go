package gateway

import (
	"cmp"
	"context"
	"slices"
	"time"

	nodepkg "github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Bounds of the top answers.
const (
	// DefaultTopLimit and MaxTopLimit bound GET /v1/top/vms.
	DefaultTopLimit = 20
	MaxTopLimit     = 200
	// maxTopScan bounds the VMs an owner-scoped top reads (its caller's
	// own VMs, page by page); an owner with more sees the first ones.
	maxTopScan = 10_000
)

// PeerMetrics asks the other replicas of the cluster for the VM samples
// they hold. The samples of a node live in the memory of the replica its
// agent heartbeats (node.Book), and an agent heartbeats one replica at a
// time: asking the others, rather than writing samples to etcd, keeps a
// heartbeat that changes only metrics free of writes.
type PeerMetrics interface {
	// HeldNodeMetrics returns the samples the other replicas hold, of the
	// node with id node, or of every node when node is empty. A replica
	// that does not answer is left out: the answer is then partial, never
	// an error.
	HeldNodeMetrics(ctx context.Context, node string) []messages.HeldNodeMetrics
}

// HeldNodeMetrics answers another replica's question: the samples of the
// heartbeats this replica received, of node (an id) or of every node when
// node is empty. It reads the book only: no actor is started or asked.
func (g *Gateway) HeldNodeMetrics(node string) []messages.HeldNodeMetrics {
	var all map[string]nodepkg.Metrics
	if node != "" {
		if m, ok := g.book.Get(node); ok {
			all = map[string]nodepkg.Metrics{node: m}
		}
	} else {
		all = g.book.All()
	}
	out := make([]messages.HeldNodeMetrics, 0, len(all))
	for id, m := range all {
		if g.stale(m.ReceivedAt) {
			continue
		}
		out = append(out, messages.HeldNodeMetrics{Node: id, ReceivedAt: m.ReceivedAt, VMs: m.VMs, Omitted: m.Omitted})
	}
	slices.SortFunc(out, func(a, b messages.HeldNodeMetrics) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// stale says samples received at are too old to show: the node would be
// unreachable by now had it not heartbeated since (to another replica,
// whose newer samples win anyway).
func (g *Gateway) stale(at time.Time) bool {
	return g.cfg.Nodes.Now().Sub(at) >= nodepkg.MissedIntervals*g.cfg.Nodes.HeartbeatInterval
}

// samples are the newest VM samples of node (an id), or of every node when
// node is empty, among this replica's and the other replicas'. Each node
// heartbeats one replica at a time; after an agent fails over, the
// replica it left holds older samples, which lose to the newer ones.
func (g *Gateway) samples(ctx context.Context, node string) map[string]nodepkg.Metrics {
	out := map[string]nodepkg.Metrics{}
	keep := func(id string, m nodepkg.Metrics) {
		if g.stale(m.ReceivedAt) {
			return
		}
		if cur, ok := out[id]; !ok || m.ReceivedAt.After(cur.ReceivedAt) {
			out[id] = m
		}
	}
	for _, h := range g.HeldNodeMetrics(node) {
		keep(h.Node, nodepkg.Metrics{ReceivedAt: h.ReceivedAt, VMs: h.VMs, Omitted: h.Omitted})
	}
	if g.cfg.PeerMetrics != nil {
		for _, h := range g.cfg.PeerMetrics.HeldNodeMetrics(ctx, node) {
			if node != "" && h.Node != node {
				continue // a peer answers only what was asked; be sure
			}
			keep(h.Node, nodepkg.Metrics{ReceivedAt: h.ReceivedAt, VMs: messages.SanitizeVMMetrics(h.VMs), Omitted: max(h.Omitted, 0)})
		}
	}
	return out
}

// VMMetrics answers the latest sample of one VM, scoped like GetVM. A VM
// that runs nowhere, or whose node no replica has a recent sample of,
// answers without Metrics.
func (g *Gateway) VMMetrics(ctx context.Context, owner, ref string) (*messages.VMMetricsView, error) {
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	view := &messages.VMMetricsView{ID: vm.ID, Name: vm.Name, Node: vm.Status.Node}
	if view.Node == "" {
		return view, nil
	}
	n, err := g.nodeByName(ctx, view.Node)
	if messages.KindOf(err) == messages.KindNotFound {
		return view, nil
	}
	if err != nil {
		return nil, err
	}
	snap := g.samples(ctx, n.ID)[n.ID]
	for _, m := range snap.VMs {
		if m.ID == vm.ID {
			at := snap.ReceivedAt
			view.ReceivedAt, view.Metrics = &at, &m
			break
		}
	}
	return view, nil
}

// TopVMs answers the sampled VMs in scope, busiest (by CPU) first, at most
// limit of them.
func (g *Gateway) TopVMs(ctx context.Context, owner string, limit int) ([]messages.VMMetricsView, error) {
	limit = clampTop(limit)
	if owner != "" {
		return g.topOwnVMs(ctx, owner, limit)
	}
	nodes, err := g.allNodes(ctx)
	if err != nil {
		return nil, err
	}
	held := g.samples(ctx, "")
	var all []messages.VMMetricsView
	for _, n := range nodes {
		snap, ok := held[n.ID]
		if !ok {
			continue
		}
		at := snap.ReceivedAt
		for _, m := range snap.VMs {
			all = append(all, messages.VMMetricsView{ID: m.ID, Node: n.Name, ReceivedAt: &at, Metrics: &m})
		}
	}
	sortTop(all)
	out := make([]messages.VMMetricsView, 0, min(limit, len(all)))
	for _, v := range all {
		if len(out) == limit {
			break
		}
		// The row names the VM and says whether it is still placed there
		// (a sample can outlive a delete or a move by one heartbeat).
		vm, err := g.st.GetVM(ctx, v.ID)
		if messages.KindOf(err) == messages.KindNotFound || err == nil && vm.Status.Node != v.Node {
			continue
		}
		if err != nil {
			return nil, err
		}
		v.Name = vm.Name
		out = append(out, v)
	}
	return out, nil
}

// topOwnVMs is TopVMs for one owner: their VMs, joined with the samples of
// the nodes they run on.
func (g *Gateway) topOwnVMs(ctx context.Context, owner string, limit int) ([]messages.VMMetricsView, error) {
	var mine []*messages.VM
	page := store.Page{Limit: 200}
	for len(mine) < maxTopScan {
		list, next, err := g.st.ListVMs(ctx, owner, page)
		if err != nil {
			return nil, err
		}
		mine = append(mine, list...)
		if next == "" {
			break
		}
		page.Cursor = next
	}
	snaps := map[string]map[string]messages.VMMetrics{} // node name → vm id → sample
	at := map[string]time.Time{}
	var held map[string]nodepkg.Metrics // read once, at the first placed VM
	var out []messages.VMMetricsView
	for _, vm := range mine {
		name := vm.Status.Node
		if name == "" {
			continue
		}
		byVM, ok := snaps[name]
		if !ok {
			byVM = map[string]messages.VMMetrics{}
			if n, err := g.nodeByName(ctx, name); err == nil {
				if held == nil {
					held = g.samples(ctx, "")
				}
				if snap, ok := held[n.ID]; ok {
					for _, m := range snap.VMs {
						byVM[m.ID] = m
					}
					at[name] = snap.ReceivedAt
				}
			}
			snaps[name] = byVM
		}
		if m, ok := byVM[vm.ID]; ok {
			t := at[name]
			out = append(out, messages.VMMetricsView{ID: vm.ID, Name: vm.Name, Node: name, ReceivedAt: &t, Metrics: &m})
		}
	}
	sortTop(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// TopNodes answers every node with the sum of its VMs' latest samples,
// busiest (by CPU) first.
func (g *Gateway) TopNodes(ctx context.Context) ([]messages.NodeTop, error) {
	nodes, err := g.allNodes(ctx)
	if err != nil {
		return nil, err
	}
	held := g.samples(ctx, "")
	out := make([]messages.NodeTop, 0, len(nodes))
	for _, n := range nodes {
		t := messages.NodeTop{Name: n.Name, Phase: n.Phase}
		if live, err := g.askNode(n.ID, nodepkg.GetMetrics{}); err == nil && live != nil {
			n = live
			t.Phase = n.Phase
		}
		if c := n.Status.Capacity; c != nil {
			t.CPUs, t.MemoryMiB = c.CPUs, c.MemoryMiB
		}
		if snap, ok := held[n.ID]; ok {
			at := snap.ReceivedAt
			t.ReceivedAt, t.OmittedVMMetrics = &at, snap.Omitted
			for _, m := range snap.VMs {
				t.VMs++
				t.CPUPercent += m.CPUPercent
				t.RSSBytes += m.RSSBytes
				t.DiskBytesPerSec += m.DiskBytesPerSec()
				t.NetBytesPerSec += m.NetBytesPerSec()
			}
		}
		out = append(out, t)
	}
	slices.SortStableFunc(out, func(a, b messages.NodeTop) int {
		if c := cmp.Compare(b.CPUPercent, a.CPUPercent); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out, nil
}

// allNodes lists every enrolled node, page by page.
func (g *Gateway) allNodes(ctx context.Context) ([]*messages.Node, error) {
	var all []*messages.Node
	page := store.Page{Limit: 200}
	for {
		list, next, err := g.st.ListNodes(ctx, page)
		if err != nil {
			return nil, err
		}
		all = append(all, list...)
		if next == "" {
			return all, nil
		}
		page.Cursor = next
	}
}

func clampTop(limit int) int {
	if limit <= 0 {
		return DefaultTopLimit
	}
	return min(limit, MaxTopLimit)
}

// sortTop orders samples busiest first, then by id for a stable answer.
func sortTop(v []messages.VMMetricsView) {
	slices.SortFunc(v, func(a, b messages.VMMetricsView) int {
		if c := cmp.Compare(b.Metrics.CPUPercent, a.Metrics.CPUPercent); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}
