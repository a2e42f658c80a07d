package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Pools have no actor, like networks (networks.go): creating, changing and
// deleting one is a single etcd compare-and-set with its guards, and the
// writes that contend on a pool are volume creates, guarded by the pool
// row's revision in their own transactions. The per-node status of a pool
// is not in its row: agents report it in heartbeats, the node actors hold
// it, and the API view is built from them (poolStatus).

// CreatePool validates and commits a pool with its name guard.
func (g *Gateway) CreatePool(ctx context.Context, req messages.CreatePoolRequest) (*messages.StoragePool, error) {
	p, err := messages.BuildPool(req)
	if err != nil {
		return nil, err
	}
	p.ID = messages.NewID()
	p.CreatedAt = g.st.Now().UTC()
	p.UpdatedAt = p.CreatedAt
	if err := g.st.CreatePool(ctx, p); err != nil {
		return nil, err
	}
	g.pools.forget()
	return p, nil
}

// poolByRef resolves a pool by id or name, without status.
func (g *Gateway) poolByRef(ctx context.Context, ref string) (*messages.StoragePool, error) {
	if messages.ValidID(ref) {
		p, err := g.st.GetPool(ctx, ref)
		if err == nil || messages.KindOf(err) != messages.KindNotFound {
			return p, err
		}
	}
	if messages.ValidateName("pool", ref) != nil {
		return nil, messages.NotFound("pool", ref)
	}
	return g.st.GetPoolByName(ctx, ref)
}

// GetPool returns a pool by name or id with its status on each of its
// nodes, from the node actors' latest heartbeats.
func (g *Gateway) GetPool(ctx context.Context, ref string) (*messages.StoragePool, error) {
	p, err := g.poolByRef(ctx, ref)
	if err != nil {
		return nil, err
	}
	nodes, err := g.poolNodes(ctx, true)
	if err != nil {
		return nil, err
	}
	if err := g.poolStatus(ctx, p, nodes); err != nil {
		return nil, err
	}
	return p, nil
}

// ListPools lists pools in creation order with their status, from the
// nodes' rows (whose pool figures lag the latest heartbeat by at most 1%
// of the pool; GetPool is exact).
func (g *Gateway) ListPools(ctx context.Context, page store.Page) ([]*messages.StoragePool, string, error) {
	pools, next, err := g.st.ListPools(ctx, page)
	if err != nil || len(pools) == 0 {
		return pools, next, err
	}
	nodes, err := g.poolNodes(ctx, false)
	if err != nil {
		return nil, "", err
	}
	for _, p := range pools {
		if err := g.poolStatus(ctx, p, nodes); err != nil {
			return nil, "", err
		}
	}
	return pools, next, nil
}

// poolNodes reads every node row; live merges each with its actor's
// in-memory status (the latest heartbeat).
func (g *Gateway) poolNodes(ctx context.Context, live bool) ([]*messages.Node, error) {
	out, err := g.allNodes(ctx)
	if err != nil {
		return nil, err
	}
	if live {
		for i, n := range out {
			if l, err := g.askNode(n.ID, node.Get{}); err == nil && l != nil {
				out[i] = l
			}
		}
	}
	return out, nil
}

// poolReport is what node n last reported of pool p, if anything. A
// report from an agent that predates pool ids matches by name.
func poolReport(n *messages.Node, p *messages.StoragePool) (messages.PoolStatus, bool) {
	for _, r := range n.Status.Pools {
		if r.Name == p.Name && (r.ID == "" || r.ID == p.ID) {
			return r, true
		}
	}
	return messages.PoolStatus{}, false
}

// poolStatus fills p.Status: one entry per node of the pool, in node
// order, with what the node reported and the bytes the pool's volumes on
// it are allocated (on a shared pool, all of them).
func (g *Gateway) poolStatus(ctx context.Context, p *messages.StoragePool, nodes []*messages.Node) error {
	vols, _, err := g.st.PoolVolumes(ctx, p.ID)
	if err != nil {
		return err
	}
	allocated := map[string]int64{}
	var all int64
	for _, v := range vols {
		allocated[v.Status.Node] += v.Spec.SizeBytes
		all += v.Spec.SizeBytes
	}
	p.Status.Nodes = nil
	for _, n := range nodes {
		if !p.HasNode(n.Name) {
			continue
		}
		st := messages.PoolNodeStatus{Node: n.Name, AllocatedBytes: allocated[n.Name],
			Health: messages.PoolHealthUnknown, Message: "the node has not reported the pool"}
		if p.Spec.Shared {
			st.AllocatedBytes = all
		}
		if r, ok := poolReport(n, p); ok {
			st.Path, st.TotalBytes, st.UsedBytes, st.FreeBytes = r.Path, r.TotalBytes, r.UsedBytes, r.FreeBytes
			if st.UsedBytes == 0 && r.TotalBytes > r.FreeBytes {
				st.UsedBytes = r.TotalBytes - r.FreeBytes // an old agent reports no used bytes
			}
			st.Health, st.Message = messages.PoolHealthError, r.Message
			if r.Healthy() {
				st.Health = messages.PoolHealthOK
			}
			st.ObservedAt = n.Status.LastHeartbeatAt
		}
		p.Status.Nodes = append(p.Status.Nodes, st)
	}
	return nil
}

// maxPoolUpdateAttempts bounds re-reads of an update sent without a
// revision while concurrent writers move the pool.
const maxPoolUpdateAttempts = 5

// UpdatePool changes a pool's node set. A node that holds volumes of the
// pool cannot leave it (pool_node_in_use); the check and the write are
// guarded together (store.UpdatePool). Sent with a revision (If-Match), a
// pool at any other is revision_conflict.
func (g *Gateway) UpdatePool(ctx context.Context, ref string, patch messages.PoolPatch) (*messages.StoragePool, error) {
	for attempt := 1; ; attempt++ {
		p, err := g.poolByRef(ctx, ref)
		if err != nil {
			return nil, err
		}
		if patch.Revision != 0 && patch.Revision != p.Revision {
			e := messages.ErrStaleRevision.WithDetail("current_revision", p.Revision)
			e.Message = fmt.Sprintf("pool %s is at revision %d, not %d; reload and retry", p.Name, p.Revision, patch.Revision)
			return nil, e
		}
		next := *p
		if !patch.Apply(&next.Spec) {
			return p, nil
		}
		if err := messages.ValidatePoolNodes(&next.Spec); err != nil {
			return nil, err
		}
		vols, rev, err := g.st.PoolVolumes(ctx, p.ID)
		if err != nil {
			return nil, err
		}
		if !next.Spec.Shared {
			for _, v := range vols {
				if v.Status.Node != "" && !next.HasNode(v.Status.Node) {
					e := messages.ErrPoolNodeInUse.WithDetail("pool", p.Name).WithDetail("node", v.Status.Node)
					e.Message = fmt.Sprintf("volume %s of pool %s is on node %s; delete it before removing the node from the pool",
						v.Name, p.Name, v.Status.Node)
					return nil, e
				}
			}
		}
		next.UpdatedAt = g.st.Now().UTC()
		err = g.st.UpdatePool(ctx, &next, rev)
		switch {
		case err == nil:
			g.pools.forget()
			return &next, nil
		case messages.KindOf(err) == messages.KindNotFound:
			return nil, messages.NotFound("pool", ref)
		case messages.KindOf(err) == messages.KindStale && patch.Revision == 0 && attempt < maxPoolUpdateAttempts:
			continue
		}
		return nil, err
	}
}

// DeletePool removes a pool; refused (pool_in_use) while it holds volumes.
// Nothing on the nodes is removed: the directory and its marker stay, and
// an agent simply stops reporting the pool.
func (g *Gateway) DeletePool(ctx context.Context, ref string) error {
	p, err := g.poolByRef(ctx, ref)
	if err != nil {
		return err
	}
	err = g.st.DeletePool(ctx, p)
	if errors.Is(err, messages.ErrPoolInUse) {
		if vols, _, verr := g.st.PoolVolumes(ctx, p.ID); verr == nil {
			var e *messages.Error
			if errors.As(err, &e) {
				e = e.WithDetail("volumes", len(vols))
				e.Message = fmt.Sprintf("pool %s holds %d volume(s); delete them first", p.Name, len(vols))
				return e
			}
		}
	}
	if err == nil {
		g.pools.forget()
	}
	return err
}

// poolCacheTTL is how long heartbeats reuse the pool list; a pool created
// or changed on another replica reaches agents within it (on this one at
// once: its writes forget the cache).
const poolCacheTTL = 5 * time.Second

// poolCache holds every pool for heartbeat answers. The zero value is ready.
type poolCache struct {
	mu    sync.Mutex
	pools []*messages.StoragePool
	until time.Time
}

func (c *poolCache) forget() {
	c.mu.Lock()
	c.until = time.Time{}
	c.mu.Unlock()
}

func (c *poolCache) all(ctx context.Context, st *store.Store) ([]*messages.StoragePool, error) {
	c.mu.Lock()
	if time.Now().Before(c.until) {
		p := c.pools
		c.mu.Unlock()
		return p, nil
	}
	c.mu.Unlock()
	pools, err := st.AllPools(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.pools, c.until = pools, time.Now().Add(poolCacheTTL)
	c.mu.Unlock()
	return pools, nil
}

// desiredPools are the pools assigned to a node, in name order, as its
// heartbeat answer carries them (never nil: an empty list tells the agent
// it has no pools, nil would mean a control plane without pools).
func (g *Gateway) desiredPools(ctx context.Context, nodeName string) ([]messages.DesiredPool, error) {
	pools, err := g.pools.all(ctx, g.st)
	if err != nil {
		return nil, err
	}
	out := []messages.DesiredPool{}
	for _, p := range pools {
		if p.HasNode(nodeName) {
			out = append(out, messages.DesiredPool{ID: p.ID, Name: p.Name, Driver: p.Spec.Driver,
				Path: p.Spec.Path, Shared: p.Spec.Shared})
		}
	}
	slices.SortFunc(out, func(a, b messages.DesiredPool) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// ensureDefaultPool seeds the settings' default pool once per cluster
// (store.EnsureDefaultPool).
func ensureDefaultPool(ctx context.Context, st *store.Store) (bool, error) {
	settings, err := st.Settings(ctx)
	if errors.Is(err, store.ErrNotSeeded) {
		settings, err = messages.DefaultSettings(), nil
	}
	if err != nil {
		return false, err
	}
	return st.EnsureDefaultPool(ctx, settings.DefaultPool)
}
