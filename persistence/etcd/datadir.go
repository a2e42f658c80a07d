package etcd

import (
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// DataDirClusterID reads the id of the cluster the member in dataDir
// belongs to from its write-ahead log, without starting it: a joiner
// compares it with the cluster it is asked to join, and a member of a
// cluster that is gone would not start far enough to say. The member must
// not be running.
func DataDirClusterID(dataDir string) (uint64, error) {
	walDir := filepath.Join(dataDir, "member-data", "member", "wal")
	lg := zap.NewNop()
	snaps, err := wal.ValidSnapshotEntries(lg, walDir)
	if err != nil {
		return 0, fmt.Errorf("etcd: read the wal of %s: %w", dataDir, err)
	}
	// The newest snapshot the log records: older segments may be purged.
	from := &walpb.Snapshot{}
	if len(snaps) > 0 {
		from = snaps[len(snaps)-1]
	}
	w, err := wal.OpenForRead(lg, walDir, from)
	if err != nil {
		return 0, fmt.Errorf("etcd: open the wal of %s: %w", dataDir, err)
	}
	defer w.Close()
	raw, _, _, err := w.ReadAll()
	if err != nil {
		return 0, fmt.Errorf("etcd: read the wal of %s: %w", dataDir, err)
	}
	var md etcdserverpb.Metadata
	if err := proto.Unmarshal(raw, &md); err != nil {
		return 0, fmt.Errorf("etcd: wal metadata of %s: %w", dataDir, err)
	}
	return md.GetClusterID(), nil
}
