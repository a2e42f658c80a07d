package etcd

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
)

const snapshotSuffix = ".snap.db"

// Snapshot writes a consistent snapshot of the member's database into dir and
// returns its path. The file appears under its final name only when complete, so
// a crash never leaves a truncated snapshot that looks usable.
func (m *Member) Snapshot(ctx context.Context, dir string, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("etcd: snapshot dir: %w", err)
	}
	name := "otherix-" + now.UTC().Format("20060102T150405.000000000Z") + snapshotSuffix
	final := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, ".partial-*")
	if err != nil {
		return "", fmt.Errorf("etcd: snapshot temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	rc, err := m.client.Snapshot(ctx)
	if err != nil {
		tmp.Close()
		return "", fmt.Errorf("etcd: snapshot stream: %w", err)
	}
	_, copyErr := io.Copy(tmp, rc)
	rc.Close()
	if copyErr == nil {
		copyErr = tmp.Sync()
	}
	if cerr := tmp.Close(); copyErr == nil {
		copyErr = cerr
	}
	if copyErr != nil {
		return "", fmt.Errorf("etcd: write snapshot: %w", copyErr)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return "", fmt.Errorf("etcd: snapshot mode: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("etcd: publish snapshot: %w", err)
	}
	return final, nil
}

// Snapshots lists complete snapshots in dir, oldest first.
func Snapshots(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("etcd: list snapshots: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), snapshotSuffix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out) // names embed a sortable UTC timestamp
	return out, nil
}

// PruneSnapshots keeps the newest keep snapshots in dir and removes the rest.
func PruneSnapshots(dir string, keep int) (removed []string, err error) {
	all, err := Snapshots(dir)
	if err != nil {
		return nil, err
	}
	if keep < 1 {
		keep = 1
	}
	for len(all) > keep {
		if err := os.Remove(all[0]); err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("etcd: prune snapshot: %w", err)
		}
		removed = append(removed, all[0])
		all = all[1:]
	}
	return removed, nil
}

// MinRevisionBump is the least a restore moves the revision past the
// snapshot's.
const MinRevisionBump = 1_000_000

// bumpPerSecond is the write rate a restore assumes the lost cluster kept up
// after the snapshot was taken: far above what one etcd cluster commits (a
// revision per transaction), so the bump covers every revision it handed out.
const bumpPerSecond = 100_000

// RevisionBump is how far a restore of snapshotPath at now moves the
// revision: enough for every write the lost cluster could have taken since
// the snapshot (its age, from the name Snapshot gave it or else the file's
// modification time, at bumpPerSecond), and at least MinRevisionBump.
func RevisionBump(snapshotPath string, now time.Time) int64 {
	taken := time.Time{}
	base := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(snapshotPath), "otherix-"), snapshotSuffix)
	if t, err := time.Parse("20060102T150405.000000000Z", base); err == nil {
		taken = t
	} else if fi, err := os.Stat(snapshotPath); err == nil {
		taken = fi.ModTime()
	}
	age := now.Sub(taken)
	if taken.IsZero() || age <= 0 {
		return MinRevisionBump
	}
	// Whole seconds, rounded up; capped well below overflow (a century).
	secs := min(int64((age+time.Second-1)/time.Second), 100*365*24*3600)
	return max(MinRevisionBump, secs*bumpPerSecond)
}

// Restore rebuilds a member data dir from a snapshot file, moving the
// revision past the snapshot's by RevisionBump. The data dir must not hold a
// member already: restoring over live data is refused rather than merged.
func Restore(snapshotPath, dataDir, name string) error {
	return RestoreWith(snapshotPath, dataDir, RestoreOptions{Name: name})
}

// RestoreOptions tune RestoreWith.
type RestoreOptions struct {
	// Name is the member name (default DefaultMember).
	Name string
	// Bump is how far the revision moves (default RevisionBump of the
	// file; at least MinRevisionBump).
	Bump int64
	// FromDataDir accepts a member's database file
	// (<data_dir>/member-data/member/snap/db of a stopped replica) rather
	// than a snapshot: such a file carries no integrity hash to check.
	FromDataDir bool
}

// RestoreWith is Restore with options.
func RestoreWith(snapshotPath, dataDir string, o RestoreOptions) error {
	name, bump := o.Name, o.Bump
	if bump <= 0 {
		bump = RevisionBump(snapshotPath, time.Now())
	}
	if name == "" {
		name = DefaultMember
	}
	if _, err := os.Stat(snapshotPath); err != nil {
		return fmt.Errorf("etcd: snapshot: %w", err)
	}
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("etcd: data dir: %w", err)
	}
	memberDir := filepath.Join(dataDir, "member-data")
	if _, err := os.Stat(memberDir); err == nil {
		return fmt.Errorf("etcd: %s already holds a member; restore into an empty data dir", dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("etcd: create data dir: %w", err)
	}
	peer := "unix://" + filepath.Join(dataDir, "peer.sock")
	err = snapshot.NewV3(zapLogger()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                name,
		OutputDataDir:       memberDir,
		PeerURLs:            []string{peer},
		InitialCluster:      name + "=" + peer,
		InitialClusterToken: "etcd-cluster",
		// A restored cluster must not hand out revisions its clients already
		// saw, or their compare-and-set on mod revision could pass against
		// new data; the history before it is marked compacted, so watches
		// and long polls from an old revision are told to start over.
		RevisionBump:  uint64(max(bump, MinRevisionBump)),
		MarkCompacted: true,
		SkipHashCheck: o.FromDataDir,
	})
	if err != nil {
		return fmt.Errorf("etcd: restore %s: %w", snapshotPath, err)
	}
	return nil
}
