//go:build etcd

package etcd

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func startMember(t *testing.T, dir string) *Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatalf("start member: %v", err)
	}
	return m
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := startMember(t, filepath.Join(dir, "a"))
	if _, err := m.Client().Put(ctx, "/otherix/probe", "before"); err != nil {
		t.Fatal(err)
	}
	snaps := filepath.Join(dir, "snaps")
	path, err := m.Snapshot(ctx, snaps, time.Now())
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	resp, err := m.Client().Put(ctx, "/otherix/probe", "after")
	if err != nil {
		t.Fatal(err)
	}
	lastRev := resp.Header.Revision
	m.Close()

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode = %v, want 0600", fi.Mode().Perm())
	}
	restored := filepath.Join(dir, "b")
	if err := Restore(path, restored, ""); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := Restore(path, restored, ""); err == nil {
		t.Fatal("restore over an existing member was accepted")
	}
	m2 := startMember(t, restored)
	defer m2.Close()
	got, err := m2.Client().Get(ctx, "/otherix/probe")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "before" {
		t.Fatalf("restored value = %v, want before", got.Kvs)
	}
	if got.Header.Revision <= lastRev {
		t.Errorf("restored revision %d does not move past %d seen before the restore", got.Header.Revision, lastRev)
	}
}

func TestPruneSnapshotsKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var names []string
	for i := 0; i < 5; i++ {
		name := filepath.Join(dir, "otherix-"+base.Add(time.Duration(i)*time.Hour).Format("20060102T150405.000000000Z")+snapshotSuffix)
		if err := os.WriteFile(name, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	removed, err := PruneSnapshots(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 3 {
		t.Fatalf("removed %d, want 3", len(removed))
	}
	left, _ := Snapshots(dir)
	if len(left) != 2 || left[0] != names[3] || left[1] != names[4] {
		t.Fatalf("left %v, want the two newest", left)
	}
}

// TestRelativeDataDir starts a member on a relative data dir, as `make dev`
// does (--data-dir .dev), and restores a snapshot into another relative one.
func TestRelativeDataDir(t *testing.T) {
	t.Chdir(t.TempDir())
	ctx := context.Background()
	m := startMember(t, "rel")
	if _, err := m.Client().Put(ctx, "/otherix/probe", "v"); err != nil {
		t.Fatal(err)
	}
	path, err := m.Snapshot(ctx, "snaps", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := Restore(path, "restored", ""); err != nil {
		t.Fatalf("restore into a relative dir: %v", err)
	}
	m2 := startMember(t, "restored")
	defer m2.Close()
	got, err := m2.Client().Get(ctx, "/otherix/probe")
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("restored member: %v %v", got, err)
	}
}

// TestRestoreFromDataDir: the database file of a stopped member (newer than
// any backup) restores with FromDataDir, and only with it: it carries no
// snapshot hash.
func TestRestoreFromDataDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := startMember(t, filepath.Join(dir, "a"))
	r, err := m.Client().Put(ctx, "/otherix/probe", "latest")
	if err != nil {
		t.Fatal(err)
	}
	seen := r.Header.Revision
	m.Close()
	db := filepath.Join(dir, "a", "member-data", "member", "snap", "db")
	if err := Restore(db, filepath.Join(dir, "checked"), ""); err == nil {
		t.Fatal("a database file without a snapshot hash restored as a snapshot")
	}
	restored := filepath.Join(dir, "b")
	if err := RestoreWith(db, restored, RestoreOptions{FromDataDir: true}); err != nil {
		t.Fatalf("restore from a data dir: %v", err)
	}
	m2 := startMember(t, restored)
	defer m2.Close()
	got, err := m2.Client().Get(ctx, "/otherix/probe")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "latest" {
		t.Fatalf("restored probe: %v %v", got, err)
	}
	if got.Header.Revision <= seen {
		t.Fatalf("restored revision %d not past %d", got.Header.Revision, seen)
	}
}
