package gateway

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/actors/system"
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

// VMMetrics answers the latest sample of one VM, scoped like GetVM. A VM
// that runs nowhere, or whose node has not reported it to this replica,
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
	snap, err := g.nodeMetrics(n.ID)
	if err != nil {
		return nil, err
	}
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
	var all []messages.VMMetricsView
	for _, n := range nodes {
		snap, err := g.nodeMetrics(n.ID)
		if err != nil {
			continue // a node whose actor does not answer is left out
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
				if snap, err := g.nodeMetrics(n.ID); err == nil {
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
	out := make([]messages.NodeTop, 0, len(nodes))
	for _, n := range nodes {
		t := messages.NodeTop{Name: n.Name, Phase: n.Phase}
		live, snap, err := g.askNodeMetrics(n.ID)
		if err == nil && live != nil {
			n = live
			t.Phase = n.Phase
		}
		if c := n.Status.Capacity; c != nil {
			t.CPUs, t.MemoryMiB = c.CPUs, c.MemoryMiB
		}
		if err == nil && snap != nil && !snap.ReceivedAt.IsZero() {
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

func (g *Gateway) nodeMetrics(id string) (*node.Metrics, error) {
	_, m, err := g.askNodeMetrics(id)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return &node.Metrics{}, nil
	}
	return m, nil
}

// askNodeMetrics asks a node's actor for the node and its samples.
func (g *Gateway) askNodeMetrics(id string) (*messages.Node, *node.Metrics, error) {
	res, err := g.rt.System.Root.RequestFuture(g.nodes, system.Deliver{ID: id, Msg: node.GetMetrics{}}, g.cfg.AskTimeout).Result()
	if err != nil {
		if errors.Is(err, actor.ErrTimeout) {
			return nil, nil, &messages.Error{Kind: messages.KindUnavailable, Code: "actor_timeout",
				Message: "the node's actor did not answer in time; retry", Err: err}
		}
		return nil, nil, err
	}
	r := res.(node.Reply)
	return r.Node, r.Metrics, r.Err
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
