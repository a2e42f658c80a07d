package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Volumes are recorded, sized and placed by the control plane; no agent
// creates their files yet (the next step wires agent tasks to the
// nodeagent/volumes drivers). A volume therefore stays pending with a
// Realised=False condition that says so, and create, resize and delete
// are single etcd transactions answered at once.

// maxVolumePlaceAttempts bounds re-placements of a create whose pool
// changed (its node set) between the read and the commit.
const maxVolumePlaceAttempts = 5

// CreateVolume validates the request, places the volume in its pool (the
// settings' default pool when none is named) and commits it, owned by
// owner. On a node-local pool the volume goes to the named node or, when
// none is named, to the pool's node with the most free space; on a shared
// pool it is tied to no node unless one is named. The size must fit the
// free space the node (or, shared, any node) last reported of the pool:
// insufficient_storage otherwise, naming the pool and the numbers.
func (g *Gateway) CreateVolume(ctx context.Context, owner string, req messages.CreateVolumeRequest) (*messages.Volume, error) {
	if owner == "" {
		return nil, messages.Invalid("owner", "is required")
	}
	if err := messages.ValidateVolumeRequest(&req); err != nil {
		return nil, err
	}
	if req.Spec.Pool == "" {
		settings, err := g.st.Settings(ctx)
		if errors.Is(err, store.ErrNotSeeded) {
			settings, err = messages.DefaultSettings(), nil
		}
		if err != nil {
			return nil, err
		}
		req.Spec.Pool = settings.DefaultPool
	}
	for attempt := 1; ; attempt++ {
		pool, err := g.st.GetPoolByName(ctx, req.Spec.Pool)
		if messages.KindOf(err) == messages.KindNotFound {
			return nil, messages.Invalid("spec.pool", "pool %q does not exist", req.Spec.Pool)
		}
		if err != nil {
			return nil, err
		}
		node, err := g.placeVolume(ctx, pool, req.Spec.Node, req.Spec.SizeBytes)
		if err != nil {
			return nil, err
		}
		now := g.st.Now().UTC()
		v := &messages.Volume{ID: messages.NewID(), Name: req.Name, Owner: owner, Generation: 1,
			Spec: req.Spec,
			Status: messages.VolumeStatus{Phase: messages.VolumePending, Node: node,
				Conditions: []messages.Condition{messages.NotRealisedCondition(now)},
				Message:    "not realised on disk: agents do not create volume files yet"},
			CreatedAt: now, UpdatedAt: now}
		err = g.st.CreateVolume(ctx, v, pool)
		if messages.KindOf(err) == messages.KindStale && attempt < maxVolumePlaceAttempts {
			continue
		}
		if messages.KindOf(err) == messages.KindNotFound {
			return nil, messages.Invalid("spec.pool", "pool %q was deleted", req.Spec.Pool)
		}
		if err != nil {
			return nil, err
		}
		return v, nil
	}
}

// placeVolume picks the node of a new volume (empty on a shared pool with
// no node named) and checks the size against the free space reported.
func (g *Gateway) placeVolume(ctx context.Context, pool *messages.StoragePool, want string, size int64) (string, error) {
	if want != "" {
		if !pool.HasNode(want) {
			return "", messages.Invalid("spec.node", "node %q does not have pool %s", want, pool.Name)
		}
		n, err := g.nodeByName(ctx, want)
		if messages.KindOf(err) == messages.KindNotFound {
			return "", messages.Invalid("spec.node", "node %q does not exist", want)
		}
		if err != nil {
			return "", err
		}
		if live, err := g.askNode(n.ID, node.Get{}); err == nil && live != nil {
			n = live
		}
		if n.Phase != messages.NodeReady {
			return "", poolNotReady(pool, want, "the node is "+n.Phase)
		}
		r, ok := poolReport(n, pool)
		if !ok || !r.Healthy() {
			return "", poolNotReady(pool, want, r.Message)
		}
		if size > r.FreeBytes {
			return "", messages.InsufficientStorage(pool.Name, want, size, r.FreeBytes)
		}
		return want, nil
	}
	nodes, err := g.poolNodes(ctx, true)
	if err != nil {
		return "", err
	}
	best, bestFree, found := "", int64(-1), false
	for _, n := range nodes {
		if !pool.HasNode(n.Name) || n.Phase != messages.NodeReady {
			continue
		}
		r, ok := poolReport(n, pool)
		if !ok || !r.Healthy() {
			continue
		}
		found = true
		if r.FreeBytes > bestFree {
			best, bestFree = n.Name, r.FreeBytes
		}
	}
	if !found {
		return "", poolNotReady(pool, "", "")
	}
	if size > bestFree {
		if pool.Spec.Shared {
			return "", messages.InsufficientStorage(pool.Name, "", size, bestFree)
		}
		return "", messages.InsufficientStorage(pool.Name, best, size, bestFree)
	}
	if pool.Spec.Shared {
		return "", nil
	}
	return best, nil
}

func poolNotReady(pool *messages.StoragePool, node, why string) *messages.Error {
	e := messages.ErrPoolNotReady.WithDetail("pool", pool.Name)
	if node == "" {
		e.Message = fmt.Sprintf("no ready node has reported pool %s healthy yet", pool.Name)
		return e
	}
	e = e.WithDetail("node", node)
	e.Message = fmt.Sprintf("node %s has not reported pool %s healthy", node, pool.Name)
	if why != "" {
		e.Message += ": " + why
	}
	return e
}

// GetVolume returns a volume by id or by name within scope, as GetVM
// does for VMs: another owner's volume is not found (wrapping
// ErrOutOfScope); with every owner in scope a name is the caller's own
// volume first, then any owner's if only one has that name.
func (g *Gateway) GetVolume(ctx context.Context, scope, ref string) (*messages.Volume, error) {
	notFound := messages.NotFound("volume", ref)
	if messages.ValidID(ref) {
		v, err := g.st.GetVolume(ctx, ref)
		if err == nil && visible(scope, v.Owner) {
			return v, nil
		}
		if err != nil && messages.KindOf(err) != messages.KindNotFound {
			return nil, err
		}
		if err == nil {
			notFound = messages.OutOfScope("volume", ref)
		}
	}
	if messages.ValidateName("volume", ref) != nil {
		return nil, notFound
	}
	id, err := g.volumeIDByName(ctx, scope, ref)
	if messages.KindOf(err) == messages.KindNotFound {
		if notFound.Err == nil && scope != "" {
			others, err := g.st.VolumeIDsByNameAnyOwner(ctx, ref)
			if err != nil {
				return nil, err
			}
			if len(others) > 0 {
				notFound = messages.OutOfScope("volume", ref)
			}
		}
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	v, err := g.st.GetVolume(ctx, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if !visible(scope, v.Owner) {
		return nil, messages.OutOfScope("volume", ref)
	}
	return v, nil
}

func (g *Gateway) volumeIDByName(ctx context.Context, scope, name string) (string, error) {
	if scope != "" {
		return g.st.VolumeIDByName(ctx, scope, name)
	}
	if caller := messages.CallerOf(ctx); caller != "" {
		id, err := g.st.VolumeIDByName(ctx, caller, name)
		if err == nil || messages.KindOf(err) != messages.KindNotFound {
			return id, err
		}
	}
	ids, err := g.st.VolumeIDsByNameAnyOwner(ctx, name)
	if err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		return "", messages.NotFound("volume", name)
	case 1:
		return ids[0], nil
	}
	return "", messages.Errorf(messages.KindConflict, "ambiguous_volume_name",
		"%d volumes of other owners are named %q; name one by its id", len(ids), name).WithDetail("ids", ids)
}

// ListVolumes lists the volumes in scope: owner's, or every one for "".
func (g *Gateway) ListVolumes(ctx context.Context, scope string, page store.Page) ([]*messages.Volume, string, error) {
	return g.st.ListVolumes(ctx, scope, page)
}

// ResizeVolume grows a volume (never shrinks: volume_shrink_unsupported).
// The growth must fit the free space its node (or, shared, the pool's
// best node) last reported. The same size changes nothing.
func (g *Gateway) ResizeVolume(ctx context.Context, scope, ref string, size int64) (*messages.Volume, error) {
	for attempt := 1; ; attempt++ {
		v, err := g.GetVolume(ctx, scope, ref)
		if err != nil {
			return nil, err
		}
		if err := messages.CheckVolumeGrow(v, size); err != nil {
			return nil, err
		}
		if size == v.Spec.SizeBytes {
			return v, nil
		}
		pool, err := g.st.GetPool(ctx, v.Status.PoolID)
		if err != nil {
			return nil, err
		}
		if _, err := g.placeVolume(ctx, pool, v.Status.Node, size-v.Spec.SizeBytes); err != nil {
			return nil, err
		}
		next := *v
		next.Spec.SizeBytes = size
		next.Generation++
		next.UpdatedAt = g.st.Now().UTC()
		err = g.st.UpdateVolume(ctx, &next)
		if messages.KindOf(err) == messages.KindStale && attempt < maxVolumePlaceAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &next, nil
	}
}

// DeleteVolume removes a volume's record; refused (volume_attached) while
// a VM has it attached.
func (g *Gateway) DeleteVolume(ctx context.Context, scope, ref string) error {
	v, err := g.GetVolume(ctx, scope, ref)
	if err != nil {
		return err
	}
	if v.Status.AttachedTo != "" {
		return messages.ErrVolumeAttached.WithDetail("vm", v.Status.AttachedTo)
	}
	return g.st.DeleteVolume(ctx, v)
}
