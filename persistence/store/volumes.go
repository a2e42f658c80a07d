package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// CreateVolume commits a new volume with its name guard (per owner) and
// index keys, guarded by the pool row being still at the revision the
// caller placed the volume against: a pool deleted meanwhile refuses the
// volume (not_found), one changed meanwhile (its node set) refuses it as
// stale, and the caller places it again.
func (s *Store) CreateVolume(ctx context.Context, v *messages.Volume, pool *messages.StoragePool) error {
	v.Status.PoolID = pool.ID
	t := NewTxn()
	t.RequireUnchanged(Pools, pool.ID, pool.Revision, staleError(Pools, pool.ID))
	t.Create(Volumes, v)
	t.ClaimUnique(Volumes, "name", volumeNameValue(v.Owner, v.Name), v.ID)
	t.AddIndex(Volumes, VolumeOwnerIndex(v.Owner), v.ID)
	t.AddIndex(Volumes, volumeNameIndex(v.Name), v.ID)
	t.AddIndex(Volumes, volumePoolIndex(pool.ID), v.ID)
	return s.Commit(ctx, t)
}

// GetVolume loads a volume by id.
func (s *Store) GetVolume(ctx context.Context, id string) (*messages.Volume, error) {
	return Get[messages.Volume](ctx, s, Volumes, id)
}

// VolumeIDByName resolves an owner's volume name to its id.
func (s *Store) VolumeIDByName(ctx context.Context, owner, name string) (string, error) {
	id, err := s.LookupUnique(ctx, Volumes, "name", volumeNameValue(owner, name))
	if messages.KindOf(err) == messages.KindNotFound {
		return "", messages.NotFound("volume", name)
	}
	return id, err
}

// VolumeIDsByNameAnyOwner returns the ids of every volume named name,
// whatever its owner.
func (s *Store) VolumeIDsByNameAnyOwner(ctx context.Context, name string) ([]string, error) {
	prefix := IndexPrefix(Volumes, volumeNameIndex(name))
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(MaxPageSize))
	if err != nil {
		return nil, unavailable(err)
	}
	ids := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ids = append(ids, lastSegment(string(kv.Key)))
	}
	return ids, nil
}

// ListVolumes lists every volume, or one owner's when owner is set.
func (s *Store) ListVolumes(ctx context.Context, owner string, p Page) ([]*messages.Volume, string, error) {
	if owner == "" {
		return List[messages.Volume](ctx, s, Volumes, p)
	}
	return ListIndexed[messages.Volume](ctx, s, Volumes, VolumeOwnerIndex(owner), p)
}

// UpdateVolume rewrites a volume's row guarded by the revision it was read
// at (a resize: the spec's size and the generation).
func (s *Store) UpdateVolume(ctx context.Context, v *messages.Volume) error {
	return s.Commit(ctx, NewTxn().Update(Volumes, v))
}

// DeleteVolume removes a volume, its name guard and its index keys in one
// transaction guarded by the revision it was read at.
func (s *Store) DeleteVolume(ctx context.Context, v *messages.Volume) error {
	t := NewTxn()
	t.Delete(Volumes, v)
	t.ReleaseUnique(Volumes, "name", volumeNameValue(v.Owner, v.Name))
	t.RemoveIndex(Volumes, VolumeOwnerIndex(v.Owner), v.ID)
	t.RemoveIndex(Volumes, volumeNameIndex(v.Name), v.ID)
	t.RemoveIndex(Volumes, volumePoolIndex(v.Status.PoolID), v.ID)
	return s.Commit(ctx, t)
}
