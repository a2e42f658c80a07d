//go:build etcd

package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func mustPool(t *testing.T, s *store.Store, name string) *messages.StoragePool {
	t.Helper()
	p, err := messages.BuildPool(messages.CreatePoolRequest{Name: name,
		Spec: messages.PoolSpec{Driver: "dir", Path: "/srv/" + name, Nodes: []string{"n1", "n2"}}})
	if err != nil {
		t.Fatal(err)
	}
	p.ID, p.CreatedAt = messages.NewID(), time.Now().UTC()
	if err := s.CreatePool(t.Context(), p); err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
	return p
}

func mustVolume(t *testing.T, s *store.Store, pool *messages.StoragePool, owner, name string) *messages.Volume {
	t.Helper()
	v := &messages.Volume{ID: messages.NewID(), Name: name, Owner: owner, Generation: 1,
		Spec:   messages.VolumeSpec{Pool: pool.Name, SizeBytes: 1 << 30},
		Status: messages.VolumeStatus{Phase: messages.VolumePending, Node: "n1"}}
	if err := s.CreateVolume(t.Context(), v, pool); err != nil {
		t.Fatalf("create volume %s: %v", name, err)
	}
	return v
}

// TestPoolGuards: pool names are unique; a pool with a volume is not
// deleted (pool_in_use) and is once the volume is gone; a volume against a
// deleted pool is refused.
func TestPoolGuards(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	p := mustPool(t, s, "fast")
	dup := *p
	dup.ID = messages.NewID()
	if err := s.CreatePool(ctx, &dup); code(err) != "pool_name_conflict" {
		t.Fatalf("duplicate name: %v", err)
	}
	got, err := s.GetPoolByName(ctx, "fast")
	if err != nil || got.ID != p.ID {
		t.Fatalf("by name: %+v %v", got, err)
	}
	v := mustVolume(t, s, p, "u1", "data")
	if v.Status.PoolID != p.ID {
		t.Fatalf("pool id %q", v.Status.PoolID)
	}
	if err := s.DeletePool(ctx, got); code(err) != "pool_in_use" {
		t.Fatalf("delete with a volume: %v", err)
	}
	vols, rev, err := s.PoolVolumes(ctx, p.ID)
	if err != nil || len(vols) != 1 || rev == 0 {
		t.Fatalf("pool volumes: %d %d %v", len(vols), rev, err)
	}
	if err := s.DeleteVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePool(ctx, got); err != nil {
		t.Fatalf("delete empty pool: %v", err)
	}
	if _, err := s.GetPoolByName(ctx, "fast"); code(err) != "not_found" {
		t.Fatalf("after delete: %v", err)
	}
	w := &messages.Volume{ID: messages.NewID(), Name: "late", Owner: "u1", Spec: messages.VolumeSpec{SizeBytes: 512}}
	if err := s.CreateVolume(ctx, w, got); code(err) != "not_found" {
		t.Fatalf("volume on a deleted pool: %v", err)
	}
	// The name is free again.
	mustPool(t, s, "fast")
}

// TestPoolDeleteRacesVolumeCreate: a pool delete and volume creates run at
// once; either the delete wins and every create fails, or some creates win
// and the delete is refused. Never a volume in a deleted pool.
func TestPoolDeleteRacesVolumeCreate(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	for round := range 5 {
		p := mustPool(t, s, "race")
		var wg sync.WaitGroup
		var delErr error
		created := make([]error, 4)
		wg.Add(5)
		go func() { defer wg.Done(); delErr = s.DeletePool(ctx, p) }()
		for i := range created {
			go func() {
				defer wg.Done()
				v := &messages.Volume{ID: messages.NewID(), Name: "v" + string(rune('a'+i)), Owner: "u",
					Spec: messages.VolumeSpec{Pool: "race", SizeBytes: 512}}
				created[i] = s.CreateVolume(ctx, v, p)
			}()
		}
		wg.Wait()
		vols, _, err := s.PoolVolumes(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if delErr == nil && len(vols) > 0 {
			t.Fatalf("round %d: pool deleted with %d volumes in it", round, len(vols))
		}
		if delErr != nil && code(delErr) != "pool_in_use" {
			t.Fatalf("round %d: delete: %v", round, delErr)
		}
		for _, v := range vols {
			if err := s.DeleteVolume(ctx, v); err != nil {
				t.Fatal(err)
			}
		}
		if delErr != nil {
			cur, err := s.GetPoolByName(ctx, "race")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.DeletePool(ctx, cur); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestVolumeNamesPerOwner: a name is unique per owner only; lists by
// owner see only theirs; by-name across owners finds both.
func TestVolumeNamesPerOwner(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	p := mustPool(t, s, "fast")
	a := mustVolume(t, s, p, "alice", "data")
	mustVolume(t, s, p, "bob", "data")
	dup := &messages.Volume{ID: messages.NewID(), Name: "data", Owner: "alice", Spec: messages.VolumeSpec{SizeBytes: 512}}
	if err := s.CreateVolume(ctx, dup, p); code(err) != "volume_name_conflict" {
		t.Fatalf("duplicate: %v", err)
	}
	if id, err := s.VolumeIDByName(ctx, "alice", "data"); err != nil || id != a.ID {
		t.Fatalf("by name: %s %v", id, err)
	}
	mine, _, err := s.ListVolumes(ctx, "alice", store.Page{})
	if err != nil || len(mine) != 1 || mine[0].Owner != "alice" {
		t.Fatalf("alice's: %+v %v", mine, err)
	}
	all, _, err := s.ListVolumes(ctx, "", store.Page{})
	if err != nil || len(all) != 2 {
		t.Fatalf("all: %d %v", len(all), err)
	}
	ids, err := s.VolumeIDsByNameAnyOwner(ctx, "data")
	if err != nil || len(ids) != 2 {
		t.Fatalf("any owner: %v %v", ids, err)
	}
	// A stale resize is refused.
	stale := *a
	a.Spec.SizeBytes *= 2
	if err := s.UpdateVolume(ctx, a); err != nil {
		t.Fatal(err)
	}
	stale.Spec.SizeBytes *= 4
	if err := s.UpdateVolume(ctx, &stale); code(err) != "revision_conflict" {
		t.Fatalf("stale update: %v", err)
	}
}

// TestPoolUpdateRefusedWhenVolumeLands: an update computed against the
// pool's volumes at some revision is refused once a volume was created
// after it, so a node cannot be removed from under a new volume.
func TestPoolUpdateRefusedWhenVolumeLands(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	p := mustPool(t, s, "fast")
	_, rev, err := s.PoolVolumes(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	mustVolume(t, s, p, "u", "late")
	// The volume's create guarded the pool row but did not write it, so
	// only the index guard can refuse this update.
	next := *p
	next.Spec.Nodes = []string{"n2"}
	if err := s.UpdatePool(ctx, &next, rev); code(err) != "revision_conflict" {
		t.Fatalf("update over a new volume: %v", err)
	}
	_, rev, err = s.PoolVolumes(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdatePool(ctx, &next, rev); err != nil {
		t.Fatalf("update after reading again: %v", err)
	}
}

// TestEnsureDefaultPool: the first boot seeds it, later boots do not, and
// a deleted default pool is not seeded again.
func TestEnsureDefaultPool(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	made, err := s.EnsureDefaultPool(ctx, "default")
	if err != nil || !made {
		t.Fatalf("first: %v %v", made, err)
	}
	p, err := s.GetPoolByName(ctx, "default")
	if err != nil || p.Spec.Driver != "dir" || !p.Spec.AllNodes || p.Spec.Path != "" {
		t.Fatalf("default pool: %+v %v", p, err)
	}
	rev := p.Revision
	if made, err := s.EnsureDefaultPool(ctx, "default"); err != nil || made {
		t.Fatalf("second: %v %v", made, err)
	}
	if err := s.DeletePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	if made, err := s.EnsureDefaultPool(ctx, "default"); err != nil || made {
		t.Fatalf("after delete: %v %v", made, err)
	}
	if _, err := s.GetPoolByName(ctx, "default"); code(err) != "not_found" {
		t.Fatalf("deleted default pool came back (was at %d): %v", rev, err)
	}
}

// TestEnsureDefaultPoolAdoptsExisting: a pool of that name made before the
// seed is kept as it is.
func TestEnsureDefaultPoolAdoptsExisting(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	p := mustPool(t, s, "default")
	if made, err := s.EnsureDefaultPool(ctx, "default"); err != nil || made {
		t.Fatalf("ensure: %v %v", made, err)
	}
	got, err := s.GetPoolByName(ctx, "default")
	if err != nil || got.ID != p.ID || got.Spec.Path != "/srv/default" {
		t.Fatalf("%+v %v", got, err)
	}
}
