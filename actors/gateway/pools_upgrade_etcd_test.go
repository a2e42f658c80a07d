//go:build etcd

package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// oldNodeRow is a node row as a release before pools wrote it: its pool
// report has only name, path, total and free.
const oldNodeRow = `{"id":"%s","name":"old-1","cert_fingerprint":"ab","cert_not_after":"2030-01-01T00:00:00Z",` +
	`"phase":"ready","cordoned":false,"status":{"pools":[{"name":"default","path":"/var/lib/otherix-agent/pools/default",` +
	`"total_bytes":107374182400,"free_bytes":53687091200}],"vm_count":0,"image_count":0},` +
	`"enrolled_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","revision":0}`

// TestUpgradeSeedsDefaultPool: a data dir written by a release without
// pools (settings, a node whose agent reported its --pool-dir as
// "default") gets a real default pool at the first start of this one,
// with no action: every node has it, its path is each node's --pool-dir,
// and the old node's report shows as the pool's status on that node.
// Volumes can be placed in it at once.
func TestUpgradeSeedsDefaultPool(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	old := store.New(m.Client())
	if _, err := old.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	// The row decodes as this release reads it, and is committed with the
	// guards and index keys the old release wrote with it.
	var n messages.Node
	if err := json.Unmarshal([]byte(fmt.Sprintf(oldNodeRow, messages.NewID())), &n); err != nil {
		t.Fatal(err)
	}
	if err := old.Commit(ctx, store.CreateNode(store.NewTxn(), &n)); err != nil {
		t.Fatal(err)
	}
	if resp, err := m.Client().Get(ctx, store.RowPrefix(store.Pools), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("pools before the upgrade: %v %v", resp, err)
	}
	m.Close()

	// The same data dir, started by this release.
	m, err = etcd.Start(ctx, etcd.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	st := store.New(m.Client(), store.WithMaxTxnOps(m.MaxTxnOps()))
	cfg := fastJobs()
	cfg.Replica = "upgraded"
	g, err := gateway.Start(ctx, st, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	pools, _, err := g.ListPools(ctx, store.Page{})
	if err != nil || len(pools) != 1 {
		t.Fatalf("pools after the upgrade: %+v %v", pools, err)
	}
	p := pools[0]
	if p.Name != "default" || p.Spec.Driver != "dir" || p.Spec.Path != "" || !p.Spec.AllNodes {
		t.Fatalf("default pool %+v", p)
	}
	if len(p.Status.Nodes) != 1 {
		t.Fatalf("status %+v", p.Status)
	}
	s := p.Status.Nodes[0]
	if s.Node != "old-1" || s.Health != messages.PoolHealthOK || s.FreeBytes != 50<<30 || s.UsedBytes != 50<<30 {
		t.Fatalf("old node's report as pool status: %+v", s)
	}
	v, err := g.CreateVolume(ctx, "someone", messages.CreateVolumeRequest{Name: "data", Spec: messages.VolumeSpec{SizeBytes: 1 << 30}})
	if err != nil || v.Spec.Pool != "default" || v.Status.Node != "old-1" {
		t.Fatalf("volume in the upgraded default pool: %+v %v", v, err)
	}
	// A second start changes nothing.
	g.Close()
	g2, err := gateway.Start(ctx, st, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)
	again, _, err := g2.ListPools(ctx, store.Page{})
	if err != nil || len(again) != 1 || again[0].ID != p.ID {
		t.Fatalf("after a second start: %+v %v", again, err)
	}
}
