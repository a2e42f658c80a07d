//go:build etcd

package gateway_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// poolBeat is a heartbeat reporting the default pool and the given ones.
func poolBeat(pools ...messages.PoolStatus) messages.Heartbeat {
	hb := observed(4)
	hb.Pools = append(hb.Pools, pools...)
	return hb
}

func poolHeartbeat(t *testing.T, g *gateway.Gateway, cert *x509.Certificate, hb messages.Heartbeat) *messages.HeartbeatResponse {
	t.Helper()
	resp, err := g.Heartbeat(t.Context(), cert, hb)
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	return resp
}

func poolNames(ps []messages.DesiredPool) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// TestPoolsAndVolumesThroughGateway walks a pool's life: the default pool
// is there from the start; a new pool goes down to its nodes only; a
// node's report shows in the pool's status with the allocated bytes of its
// volumes; sizes, shrinks, space and in-use guards answer their codes.
func TestPoolsAndVolumesThroughGateway(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, _ := startNodes(t, clock)
	ctx := t.Context()
	def, err := g.GetPool(ctx, "default")
	if err != nil || def.Spec.Path != "" || !def.Spec.AllNodes {
		t.Fatalf("default pool: %+v %v", def, err)
	}
	_, cert1 := enrollNode(t, g, "n1")
	_, cert2 := enrollNode(t, g, "n2")
	fast, err := g.CreatePool(ctx, messages.CreatePoolRequest{Name: "fast",
		Spec: messages.PoolSpec{Driver: "dir", Path: "/srv/fast", Nodes: []string{"n1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.CreatePool(ctx, messages.CreatePoolRequest{Name: "fast",
		Spec: messages.PoolSpec{Driver: "dir", Path: "/srv/x", AllNodes: true}}); err == nil {
		t.Fatal("duplicate pool name accepted")
	} else {
		wantCode(t, err, "pool_name_conflict")
	}
	_, err = g.CreatePool(ctx, messages.CreatePoolRequest{Name: "evil",
		Spec: messages.PoolSpec{Driver: "dir", Path: "/srv/../etc", AllNodes: true}})
	wantCode(t, err, "invalid_field")

	r1 := poolHeartbeat(t, g, cert1, poolBeat())
	r2 := poolHeartbeat(t, g, cert2, poolBeat())
	if got := poolNames(r1.Desired.Pools); len(got) != 2 || got[0] != "default" || got[1] != "fast" {
		t.Fatalf("n1 desired pools %v", got)
	}
	if got := poolNames(r2.Desired.Pools); len(got) != 1 || got[0] != "default" {
		t.Fatalf("n2 desired pools %v", got)
	}

	// Not reported yet: no volume can be placed.
	_, err = g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "data",
		Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: 1 << 30}})
	wantCode(t, err, "pool_not_ready")

	report := messages.PoolStatus{Name: "fast", ID: fast.ID, Driver: "dir", Path: "/srv/fast",
		TotalBytes: 20 << 30, UsedBytes: 10 << 30, FreeBytes: 10 << 30, Health: messages.PoolHealthOK}
	poolHeartbeat(t, g, cert1, poolBeat(report))

	for name, size := range map[string]int64{"zero": 0, "negative": -1024, "odd": 1000} {
		_, err := g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "v-" + name,
			Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: size}})
		wantCode(t, err, "invalid_field")
	}
	_, err = g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "huge",
		Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: 11 << 30}})
	e := wantCode(t, err, "insufficient_storage")
	if e.Details["pool"] != "fast" || e.Details["free_bytes"] != int64(10<<30) || e.Details["requested_bytes"] != int64(11<<30) {
		t.Fatalf("insufficient_storage details %+v", e.Details)
	}
	_, err = g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "elsewhere",
		Spec: messages.VolumeSpec{Pool: "fast", Node: "n2", SizeBytes: 1 << 30}})
	wantCode(t, err, "invalid_field")
	_, err = g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "nopool",
		Spec: messages.VolumeSpec{Pool: "nope", SizeBytes: 1 << 30}})
	wantCode(t, err, "invalid_field")

	v, err := g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "data",
		Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Status.Phase != messages.VolumePending || v.Status.Node != "n1" || len(v.Status.Conditions) != 1 ||
		v.Status.Conditions[0].Status != "False" || v.Generation != 1 {
		t.Fatalf("volume %+v", v)
	}
	// A volume without a pool goes to the settings' default pool.
	dv, err := g.CreateVolume(ctx, "alice", messages.CreateVolumeRequest{Name: "scratch",
		Spec: messages.VolumeSpec{SizeBytes: 512 << 20}})
	if err != nil || dv.Spec.Pool != "default" || dv.Status.Node == "" {
		t.Fatalf("default-pool volume %+v %v", dv, err)
	}

	p, err := g.GetPool(ctx, "fast")
	if err != nil || len(p.Status.Nodes) != 1 {
		t.Fatalf("pool status %+v %v", p, err)
	}
	if s := p.Status.Nodes[0]; s.Node != "n1" || s.AllocatedBytes != 1<<30 || s.FreeBytes != 10<<30 ||
		s.UsedBytes != 10<<30 || s.Health != "ok" || s.ObservedAt == nil {
		t.Fatalf("n1's status %+v", s)
	}

	wantCode(t, g.DeletePool(ctx, "fast"), "pool_in_use")
	n2 := []string{"n2"}
	_, err = g.UpdatePool(ctx, "fast", messages.PoolPatch{Nodes: &n2})
	wantCode(t, err, "pool_node_in_use")
	both := []string{"n2", "n1"}
	up, err := g.UpdatePool(ctx, "fast", messages.PoolPatch{Nodes: &both})
	if err != nil || len(up.Spec.Nodes) != 2 || up.Spec.Nodes[0] != "n1" {
		t.Fatalf("add n2: %+v %v", up, err)
	}
	if r := poolHeartbeat(t, g, cert2, poolBeat()); len(r.Desired.Pools) != 2 {
		t.Fatalf("n2 after the patch: %v", poolNames(r.Desired.Pools))
	}

	_, err = g.ResizeVolume(ctx, "alice", "data", 512<<20)
	wantCode(t, err, "volume_shrink_unsupported")
	_, err = g.ResizeVolume(ctx, "alice", "data", 12<<30)
	wantCode(t, err, "insufficient_storage")
	grown, err := g.ResizeVolume(ctx, "alice", "data", 2<<30)
	if err != nil || grown.Spec.SizeBytes != 2<<30 || grown.Generation != 2 {
		t.Fatalf("grow: %+v %v", grown, err)
	}

	// Another user sees nothing of alice's volume; the any scope does.
	_, err = g.GetVolume(ctx, "bob", "data")
	wantCode(t, err, "not_found")
	_, err = g.GetVolume(ctx, "bob", v.ID)
	wantCode(t, err, "not_found")
	wantCode(t, g.DeleteVolume(ctx, "bob", v.ID), "not_found")
	if got, err := g.GetVolume(ctx, "", "data"); err != nil || got.ID != v.ID {
		t.Fatalf("any scope: %+v %v", got, err)
	}
	if list, _, err := g.ListVolumes(ctx, "bob", store.Page{}); err != nil || len(list) != 0 {
		t.Fatalf("bob's list: %+v %v", list, err)
	}

	for _, ref := range []string{"data", "scratch"} {
		if err := g.DeleteVolume(ctx, "alice", ref); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.DeletePool(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if r := poolHeartbeat(t, g, cert1, poolBeat()); len(r.Desired.Pools) != 1 {
		t.Fatalf("after delete: %v", poolNames(r.Desired.Pools))
	}
}

// TestUnchangedPoolReportsWriteNothing: heartbeats whose pool reports
// drift only a little leave etcd's revision where it was.
func TestUnchangedPoolReportsWriteNothing(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	_, cert := enrollNode(t, g, "n1")
	report := messages.PoolStatus{Name: "default", Driver: "dir", Path: "/var/lib/otherix/pools/default",
		TotalBytes: 100 << 30, UsedBytes: 50 << 30, FreeBytes: 50 << 30, Health: messages.PoolHealthOK}
	hb := observed(4)
	hb.Pools = []messages.PoolStatus{report}
	poolHeartbeat(t, g, cert, hb)
	rev := func() int64 {
		resp, err := st.Client().Get(ctx, store.Root+"settings")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	before := rev()
	for i := range 10 {
		clock.Add(30 * time.Second)
		hb.Pools[0].UsedBytes = report.UsedBytes + int64(i)<<20
		hb.Pools[0].FreeBytes = report.FreeBytes - int64(i)<<20
		poolHeartbeat(t, g, cert, hb)
	}
	if after := rev(); after != before {
		t.Fatalf("ten heartbeats with drifting pool figures moved the revision from %d to %d", before, after)
	}
	p, err := g.GetPool(ctx, "default")
	if err != nil || p.Status.Nodes[0].UsedBytes != report.UsedBytes+9<<20 {
		t.Fatalf("live figures: %+v %v", p, err)
	}
}
