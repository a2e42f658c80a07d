package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Resource names of storage.
const (
	Pools   = "pools"
	Volumes = "volumes"
	// defaultPoolMigrated marks a store whose default pool was seeded, so
	// an admin who deletes the default pool does not get it back at the
	// next boot.
	defaultPoolMigrated = Root + "migrations/default-pool"
)

// volumePoolIndex lists one pool's volumes: the pool's in-use set (a pool
// with any is not deleted) and what its allocated bytes are summed over.
func volumePoolIndex(poolID string) string { return "pool/" + poolID }

// VolumeOwnerIndex is the index sort key that lists one owner's volumes.
func VolumeOwnerIndex(owner string) string { return "owner/" + owner }

// volumeNameIndex lists volumes by name across owners (names are unique
// per owner only).
func volumeNameIndex(name string) string { return "name/" + name }

func volumeNameValue(owner, name string) string { return owner + "/" + name }

// CreatePool commits a new pool with its name guard.
func (s *Store) CreatePool(ctx context.Context, p *messages.StoragePool) error {
	t := NewTxn().Create(Pools, p).ClaimUnique(Pools, "name", p.Name, p.ID)
	return s.Commit(ctx, t)
}

// GetPool loads a pool by id.
func (s *Store) GetPool(ctx context.Context, id string) (*messages.StoragePool, error) {
	return Get[messages.StoragePool](ctx, s, Pools, id)
}

// GetPoolByName loads a pool by name.
func (s *Store) GetPoolByName(ctx context.Context, name string) (*messages.StoragePool, error) {
	id, err := s.LookupUnique(ctx, Pools, "name", name)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("pool", name)
	}
	if err != nil {
		return nil, err
	}
	p, err := s.GetPool(ctx, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("pool", name)
	}
	return p, err
}

// ListPools lists pools in creation order.
func (s *Store) ListPools(ctx context.Context, p Page) ([]*messages.StoragePool, string, error) {
	return List[messages.StoragePool](ctx, s, Pools, p)
}

// AllPools reads every pool (pools are few: a handful per cluster).
func (s *Store) AllPools(ctx context.Context) ([]*messages.StoragePool, error) {
	var out []*messages.StoragePool
	page := Page{Limit: MaxPageSize}
	for {
		items, next, err := s.ListPools(ctx, page)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			return out, nil
		}
		page.Cursor = next
	}
}

// UpdatePool rewrites a pool's row guarded by the revision it was read at.
// The node set is the only thing that changes; removed nodes must hold
// none of the pool's volumes, which the caller checked by reading them at
// volumesRev: no volume of the pool may have been created since, or the
// update is refused as stale and the caller reads again.
func (s *Store) UpdatePool(ctx context.Context, p *messages.StoragePool, volumesRev int64) error {
	t := NewTxn().Update(Pools, p)
	t.RequireNoneCreatedUnder(IndexPrefix(Volumes, volumePoolIndex(p.ID)), volumesRev, staleError(Pools, p.ID))
	return s.Commit(ctx, t)
}

// DeletePool removes a pool and its name guard in a transaction refused
// (pool_in_use) while any volume is in it: the check and the delete are
// one compare-and-set, so a volume created concurrently either lands first
// (and the delete is refused) or finds the pool gone.
func (s *Store) DeletePool(ctx context.Context, p *messages.StoragePool) error {
	inUse := messages.ErrPoolInUse.WithDetail("pool", p.Name)
	inUse.Message = fmt.Sprintf("volumes are in pool %s; delete them first", p.Name)
	t := NewTxn()
	t.RequireNoneCreatedUnder(IndexPrefix(Volumes, volumePoolIndex(p.ID)), 0, inUse)
	t.Delete(Pools, p)
	t.ReleaseUnique(Pools, "name", p.Name)
	return s.Commit(ctx, t)
}

// EnsureDefaultPool seeds the default pool once per cluster: a new cluster
// at its first boot and an existing one at its first boot on a version
// with pools, so an old install keeps working with no action. The pool
// has the dir driver, every node and an empty path (each node's own
// --pool-dir, where its images and disks have always been). It reports
// whether this call created the pool. Once seeded (or when a pool of that
// name already exists) a marker key keeps later boots from re-creating a
// default pool an admin deleted.
func (s *Store) EnsureDefaultPool(ctx context.Context, name string) (bool, error) {
	// Read first: a write at every boot would fail on a full store.
	resp, err := s.cli.Get(ctx, defaultPoolMigrated, clientv3.WithCountOnly())
	if err != nil {
		return false, unavailable(err)
	}
	if resp.Count > 0 {
		return false, nil
	}
	p := &messages.StoragePool{ID: messages.NewID(), Name: name,
		Spec: messages.PoolSpec{Driver: messages.PoolDriverDir, AllNodes: true}}
	p.CreatedAt = s.now().UTC()
	p.UpdatedAt = p.CreatedAt
	seeded := errors.New("store: default pool seeded meanwhile")
	t := NewTxn().Create(Pools, p)
	t.ClaimUnique(Pools, "name", p.Name, p.ID)
	t.requireAbsent(defaultPoolMigrated, seeded)
	t.ops = append(t.ops, clientv3.OpPut(defaultPoolMigrated, p.ID))
	err = s.Commit(ctx, t)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, seeded):
		return false, nil
	case messages.KindOf(err) == messages.KindConflict:
		// A pool of that name exists (made by hand): it is the default.
		_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(defaultPoolMigrated), "=", 0)).
			Then(clientv3.OpPut(defaultPoolMigrated, "existing")).Commit()
		return false, unavailable(err)
	}
	return false, err
}

// PoolVolumes reads every volume of a pool (for allocated sums and the
// node-removal check) and the revision they were read at.
func (s *Store) PoolVolumes(ctx context.Context, poolID string) ([]*messages.Volume, int64, error) {
	ctx, rr := WithReadRevision(ctx)
	var out []*messages.Volume
	page := Page{Limit: MaxPageSize}
	for {
		items, next, err := ListIndexed[messages.Volume](ctx, s, Volumes, volumePoolIndex(poolID), page)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, items...)
		if next == "" {
			return out, rr.Revision(), nil
		}
		page.Cursor = next
	}
}
