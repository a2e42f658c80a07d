package volumes

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The btrfs driver's offline snapshots: read-only btrfs snapshots of a
// volume's subvolume.

func (b *btrfsDriver) CreateSnapshot(ctx context.Context, volume, snap string) (SnapshotInfo, error) {
	if err := checkName("volume", volume); err != nil {
		return SnapshotInfo{}, err
	}
	if err := checkName("snapshot", snap); err != nil {
		return SnapshotInfo{}, err
	}
	defer b.lock(volume)()
	if err := b.checkOwner(volume); err != nil {
		return SnapshotInfo{}, err
	}
	src := b.volDir(volume)
	if !isSubvolume(src) {
		return SnapshotInfo{}, newError(CodeNotFound, "no volume "+volume, nil)
	}
	if err := os.MkdirAll(b.path(dirSnapshots, volume), 0o700); err != nil {
		return SnapshotInfo{}, b.ioError("make snapshot directory", err)
	}
	// A read-only snapshot at its final name: btrfs makes it appear whole,
	// and fails with EEXIST instead of replacing one.
	if err := subvolSnapshot(src, b.snapDir(volume, snap), true); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return SnapshotInfo{}, newError(CodeSnapshotExists, "volume "+volume+" already has snapshot "+snap, nil)
		}
		return SnapshotInfo{}, b.ioError("snapshot "+volume, err)
	}
	return b.snapInfo(volume, snap)
}

func (b *btrfsDriver) snapInfo(volume, snap string) (SnapshotInfo, error) {
	dir := b.snapDir(volume, snap)
	disk := filepath.Join(dir, btrfsDisk)
	virt, alloc, _, err := statFile(disk, formatRaw)
	if err != nil {
		return SnapshotInfo{}, b.notFound(volume, snap, err)
	}
	return SnapshotInfo{Volume: volume, Name: snap, Path: disk, Format: formatRaw, VirtualSize: virt, Allocated: alloc, Created: birthTime(dir)}, nil
}

func (b *btrfsDriver) DeleteSnapshot(ctx context.Context, volume, snap string) error {
	if err := checkName("volume", volume); err != nil {
		return err
	}
	if err := checkName("snapshot", snap); err != nil {
		return err
	}
	defer b.lock(volume)()
	if err := b.checkOwner(volume); err != nil {
		return err
	}
	dir := b.snapDir(volume, snap)
	if !isSubvolume(dir) {
		return newError(CodeSnapshotNotFound, "volume "+volume+" has no snapshot "+snap, nil)
	}
	// One ioctl: the snapshot's name goes in one transaction; btrfs frees
	// its extents in the background.
	if err := subvolDelete(dir); err != nil {
		return b.ioError("delete snapshot "+snap, err)
	}
	if err := b.syncfs(); err != nil {
		return b.ioError("sync", err)
	}
	return nil
}

func (b *btrfsDriver) ListSnapshots(ctx context.Context, volume string) ([]SnapshotInfo, error) {
	if err := checkName("volume", volume); err != nil {
		return nil, err
	}
	names, err := listNames(b.path(dirSnapshots, volume), "")
	if errors.Is(err, fs.ErrNotExist) {
		if !isSubvolume(b.volDir(volume)) {
			return nil, newError(CodeNotFound, "no volume "+volume, nil)
		}
		return nil, nil
	}
	if err != nil {
		return nil, b.ioError("list snapshots", err)
	}
	out := make([]SnapshotInfo, 0, len(names))
	for _, n := range names {
		si, err := b.snapInfo(volume, n)
		if ErrorCode(err) == CodeSnapshotNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, si)
	}
	return out, nil
}
