package server

import (
	"context"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// fakeStorage is the pool and volume side of fakeCP: in memory, validated
// by the real messages rules. Guards, placement and space are the store's
// and the gateway's, tested on real etcd.
type fakeStorage struct {
	mu      sync.Mutex
	pools   map[string]*messages.StoragePool // by name
	volumes map[string]*messages.Volume      // by id
}

func newFakeStorage() *fakeStorage {
	return &fakeStorage{pools: map[string]*messages.StoragePool{}, volumes: map[string]*messages.Volume{}}
}

func (f *fakeStorage) CreatePool(_ context.Context, req messages.CreatePoolRequest) (*messages.StoragePool, error) {
	p, err := messages.BuildPool(req)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pools[p.Name] != nil {
		return nil, messages.NameConflict("pools", "name", p.Name)
	}
	p.ID, p.CreatedAt, p.Revision = messages.NewID(), time.Now().UTC(), 1
	p.UpdatedAt = p.CreatedAt
	f.pools[p.Name] = p
	return p, nil
}

func (f *fakeStorage) GetPool(_ context.Context, ref string) (*messages.StoragePool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.pools[ref]; p != nil {
		c := *p
		c.Status.Nodes = []messages.PoolNodeStatus{{Node: "n1", TotalBytes: 10 << 30, FreeBytes: 5 << 30,
			UsedBytes: 5 << 30, Health: messages.PoolHealthOK}}
		return &c, nil
	}
	return nil, messages.NotFound("pool", ref)
}

func (f *fakeStorage) ListPools(context.Context, store.Page) ([]*messages.StoragePool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []*messages.StoragePool{}
	for _, p := range f.pools {
		out = append(out, p)
	}
	return out, "", nil
}

func (f *fakeStorage) UpdatePool(_ context.Context, ref string, patch messages.PoolPatch) (*messages.StoragePool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pools[ref]
	if p == nil {
		return nil, messages.NotFound("pool", ref)
	}
	next := *p
	if patch.Apply(&next.Spec) {
		if err := messages.ValidatePoolNodes(&next.Spec); err != nil {
			return nil, err
		}
		next.Revision++
		f.pools[ref] = &next
	}
	return &next, nil
}

func (f *fakeStorage) DeletePool(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pools[ref] == nil {
		return messages.NotFound("pool", ref)
	}
	for _, v := range f.volumes {
		if v.Spec.Pool == ref {
			return messages.ErrPoolInUse
		}
	}
	delete(f.pools, ref)
	return nil
}

func (f *fakeStorage) CreateVolume(_ context.Context, owner string, req messages.CreateVolumeRequest) (*messages.Volume, error) {
	if err := messages.ValidateVolumeRequest(&req); err != nil {
		return nil, err
	}
	if req.Spec.Pool == "" {
		req.Spec.Pool = "default"
	}
	now := time.Now().UTC()
	v := &messages.Volume{ID: messages.NewID(), Name: req.Name, Owner: owner, Generation: 1, Spec: req.Spec,
		Status: messages.VolumeStatus{Phase: messages.VolumePending, PoolID: messages.NewID(), Node: "n1",
			Conditions: []messages.Condition{messages.NotRealisedCondition(now)}},
		CreatedAt: now, UpdatedAt: now, Revision: 1}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.volumes[v.ID] = v
	return v, nil
}

func (f *fakeStorage) volume(scope, ref string) (*messages.Volume, error) {
	for _, v := range f.volumes {
		if (v.ID == ref || v.Name == ref) && (scope == "" || scope == v.Owner) {
			return v, nil
		}
	}
	return nil, messages.NotFound("volume", ref)
}

func (f *fakeStorage) GetVolume(_ context.Context, scope, ref string) (*messages.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.volume(scope, ref)
}

func (f *fakeStorage) ListVolumes(_ context.Context, scope string, _ store.Page) ([]*messages.Volume, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []*messages.Volume{}
	for _, v := range f.volumes {
		if scope == "" || scope == v.Owner {
			out = append(out, v)
		}
	}
	return out, "", nil
}

func (f *fakeStorage) ResizeVolume(_ context.Context, scope, ref string, size int64) (*messages.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.volume(scope, ref)
	if err != nil {
		return nil, err
	}
	if err := messages.CheckVolumeGrow(v, size); err != nil {
		return nil, err
	}
	v.Spec.SizeBytes, v.Generation, v.Revision = size, v.Generation+1, v.Revision+1
	return v, nil
}

func (f *fakeStorage) DeleteVolume(_ context.Context, scope, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.volume(scope, ref)
	if err != nil {
		return err
	}
	delete(f.volumes, v.ID)
	return nil
}
