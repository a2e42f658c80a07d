package etcd

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRevisionBumpFollowsSnapshotAge(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	name := func(taken time.Time) string {
		return "/b/otherix-" + taken.UTC().Format("20060102T150405.000000000Z") + snapshotSuffix
	}
	for _, c := range []struct {
		path string
		want int64
	}{
		{name(now.Add(-time.Second)), MinRevisionBump},
		{name(now.Add(-time.Hour)), 3600 * bumpPerSecond},
		{name(now.Add(-24 * time.Hour)), 24 * 3600 * bumpPerSecond},
		{name(now.Add(time.Hour)), MinRevisionBump}, // a clock that went back
	} {
		if got := RevisionBump(c.path, now); got != c.want {
			t.Errorf("RevisionBump(%s) = %d, want %d", c.path, got, c.want)
		}
	}
	// A file named otherwise: its modification time.
	f := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f, now.Add(-2*time.Hour), now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := RevisionBump(f, now); got != 7200*bumpPerSecond {
		t.Errorf("RevisionBump by modification time = %d", got)
	}
}
