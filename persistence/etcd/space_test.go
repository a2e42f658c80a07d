//go:build etcd

package etcd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fillUntilNoSpace writes 64 KiB values under prefix until etcd refuses a
// write for space, and returns how many it wrote.
func fillUntilNoSpace(t *testing.T, cli *clientv3.Client, prefix string) int {
	t.Helper()
	ctx := context.Background()
	val := strings.Repeat("x", 64<<10)
	for i := 0; i < 10_000; i++ {
		_, err := cli.Put(ctx, fmt.Sprintf("%s%06d", prefix, i), val)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			return i
		}
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	t.Fatal("the store never filled up")
	return 0
}

func TestSpaceConfigValidated(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{QuotaBytes: 1024}, "quota_bytes"},
		{Config{AutoCompactionMode: "hourly"}, "auto_compaction_mode"},
		{Config{AutoCompactionRetention: "soon"}, "auto_compaction_retention"},
		{Config{AutoCompactionMode: "revision", AutoCompactionRetention: "1h"}, "auto_compaction_retention"},
	} {
		c.cfg.DataDir = dir
		_, err := Start(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}

// TestNoSpaceRecovery fills a member with a 4 MiB quota until etcd raises
// its space alarm, then checks what the storage loop relies on: the alarm
// shows in Status, reads and deletes still work while writes are refused,
// and deleting, compacting, defragmenting and disarming bring writes back.
// It also checks that the alarm survives a restart of the member, which is
// why otherix-api must boot on a full store.
func TestNoSpaceRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "m")
	const quota = 4 << 20
	m, err := Start(ctx, Config{DataDir: dir, QuotaBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.NoSpace || s.Quota != quota || s.DBSize == 0 || s.DBSizeInUse == 0 {
		t.Fatalf("fresh member status %+v", s)
	}
	n := fillUntilNoSpace(t, m.Client(), "/garbage/")
	s, err = m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.NoSpace {
		t.Fatalf("after %d puts refused for space the alarm is not raised: %+v", n, s)
	}
	// Reads work; a small write is refused too, since the alarm is
	// cluster-wide and not about the size of one write.
	if _, err := m.Client().Get(ctx, "/garbage/000000"); err != nil {
		t.Fatalf("read while full: %v", err)
	}
	if _, err := m.Client().Put(ctx, "/small", "v"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("small write while full = %v, want NOSPACE", err)
	}

	// The alarm is persisted: a restart on the same data dir is still full.
	m.Close()
	m, err = Start(ctx, Config{DataDir: dir, QuotaBytes: quota})
	if err != nil {
		t.Fatalf("restart on a full store: %v", err)
	}
	defer m.Close()
	if s, err := m.Status(ctx); err != nil || !s.NoSpace {
		t.Fatalf("after restart: status %+v, %v; want the alarm still raised", s, err)
	}

	// Deletes are taken while full.
	if _, err := m.Client().Delete(ctx, "/garbage/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete while full: %v", err)
	}
	if _, err := m.CompactAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CompactAll(ctx); err != nil {
		t.Fatalf("compacting again to the same revision: %v", err)
	}
	if err := m.Defragment(ctx); err != nil {
		t.Fatal(err)
	}
	s, err = m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.DBSize >= quota/2 || s.Defrags != 1 || !s.NoSpace {
		t.Fatalf("after delete, compaction and defragmentation: %+v; want a small file, one defrag, alarm still raised", s)
	}
	if _, err := m.Client().Put(ctx, "/small", "v"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("write before the alarm is disarmed = %v, want NOSPACE", err)
	}
	if err := m.DisarmNoSpace(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := m.Status(ctx); err != nil || s.NoSpace {
		t.Fatalf("after disarm: %+v, %v", s, err)
	}
	if _, err := m.Client().Put(ctx, "/small", "v"); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
}

// BenchmarkDefragment measures the pause one defragmentation of a member
// holding 125 MiB of live data (and as much freed) costs:
// go test -tags etcd -run '^$' -bench Defragment -benchtime 3x ./persistence/etcd/
func BenchmarkDefragment(b *testing.B) {
	ctx := context.Background()
	m, err := Start(ctx, Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	val := strings.Repeat("x", 64<<10)
	for i := 0; i < 4000; i++ {
		if _, err := m.Client().Put(ctx, fmt.Sprintf("/g/%05d", i), val); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range []string{"/g/00", "/g/01"} {
		if _, err := m.Client().Delete(ctx, p, clientv3.WithPrefix()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := m.CompactAll(ctx); err != nil {
		b.Fatal(err)
	}
	before, _ := m.Status(ctx)
	b.ResetTimer()
	for b.Loop() {
		if err := m.Defragment(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after, _ := m.Status(ctx)
	b.ReportMetric(float64(after.DBSizeInUse)/(1<<20), "MiB-in-use")
	b.Logf("file %d → %d bytes, %d in use", before.DBSize, after.DBSize, after.DBSizeInUse)
}
