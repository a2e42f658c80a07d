package volumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The dir driver's offline snapshots, and the refs that keep a snapshot
// while a clone's overlay reads it (filesystems without reflinks).

// snapOf tells whether path is one of this pool's snapshot files, and
// which.
func (d *dirDriver) snapOf(path string) (volume, snap string, ok bool) {
	rel, err := filepath.Rel(d.path(dirSnapshots), filepath.Clean(path))
	if err != nil {
		return "", "", false
	}
	volume, file, ok := strings.Cut(rel, string(filepath.Separator))
	if !ok {
		return "", "", false
	}
	snap, ok = strings.CutSuffix(file, ".qcow2")
	if !ok || !ValidName(volume) || !ValidName(snap) {
		return "", "", false
	}
	return volume, snap, true
}

// backingOf returns the backing file a qcow2 file names, made absolute.
func backingOf(path string) (string, error) {
	h, err := readHeader(path)
	if err != nil {
		return "", err
	}
	b := h.BackingFile
	if b != "" && !filepath.IsAbs(b) {
		b = filepath.Join(filepath.Dir(path), b)
	}
	return b, nil
}

// addRef records that the file being made (id, to appear at file) will
// read backing, when backing is one of this pool's snapshots. The journal
// entry under key lets Recover drop the ref if file never appears. It
// returns the ref path, "" when none was needed.
func (d *dirDriver) addRef(key, id, file, backing string) (string, error) {
	v, s, ok := d.snapOf(backing)
	if !ok {
		return "", nil
	}
	ref := filepath.Join(d.refDir(v, s), id)
	if err := d.record(key, intent{Op: opRef, File: file, Ref: ref}); err != nil {
		return "", err
	}
	err := os.MkdirAll(filepath.Dir(ref), 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(ref, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			f.Close()
			err = fsyncDir(filepath.Dir(ref))
		}
	}
	if err != nil {
		os.Remove(ref)
		d.forget(key)
		return "", d.ioError("make ref", err)
	}
	return ref, nil
}

// dropRef removes the ref a file (id) holds on its backing snapshot.
func (d *dirDriver) dropRef(file, id string) {
	b, err := backingOf(file)
	if err != nil {
		return
	}
	if v, s, ok := d.snapOf(b); ok {
		os.Remove(filepath.Join(d.refDir(v, s), id))
		os.Remove(d.refDir(v, s)) // only if empty
	}
}

// users lists the refs on a snapshot.
func (d *dirDriver) users(volume, snap string) []string {
	f, err := os.Open(d.refDir(volume, snap))
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return names
}

func (d *dirDriver) CreateSnapshot(ctx context.Context, volume, snap string) (si SnapshotInfo, err error) {
	if err := checkName("volume", volume); err != nil {
		return SnapshotInfo{}, err
	}
	if err := checkName("snapshot", snap); err != nil {
		return SnapshotInfo{}, err
	}
	defer d.lock(volume)()
	if err := d.checkOwner(volume); err != nil {
		return SnapshotInfo{}, err
	}
	src := d.volFile(volume)
	backing, err := backingOf(src)
	if err != nil {
		return SnapshotInfo{}, d.notFound(volume, "", err)
	}
	dir := d.path(dirSnapshots, volume)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return SnapshotInfo{}, d.ioError("make snapshot directory", err)
	}
	final := d.snapFile(volume, snap)
	if ok, err := exists(final); err != nil || ok {
		if err != nil {
			return SnapshotInfo{}, d.ioError("look up snapshot", err)
		}
		return SnapshotInfo{}, newError(CodeSnapshotExists, "volume "+volume+" already has snapshot "+snap, nil)
	}
	key := journalKey(volume, snap)
	ref, err := d.addRef(key, volume+"@"+snap, final, backing)
	if err != nil {
		return SnapshotInfo{}, err
	}
	tmp := filepath.Join(dir, d.tempName(snap))
	defer undoOnError(&err, func() {
		os.Remove(tmp)
		if ref != "" {
			os.Remove(ref)
			d.forget(key)
		}
	})
	if err := d.copyTo(ctx, tmp, src); err != nil {
		return SnapshotInfo{}, d.ioError("snapshot "+volume, err)
	}
	// Read-only on disk too: a snapshot never changes, and QEMU opens it
	// read-only as a backing file.
	if err := os.Chmod(tmp, 0o400); err != nil {
		return SnapshotInfo{}, d.ioError("snapshot "+volume, err)
	}
	if err := d.step("dir.snapshot.written"); err != nil {
		return SnapshotInfo{}, err
	}
	if err := d.commitFile(tmp, final, "dir.snapshot.linked"); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return SnapshotInfo{}, newError(CodeSnapshotExists, "volume "+volume+" already has snapshot "+snap, nil)
		}
		return SnapshotInfo{}, d.commitError(volume, err)
	}
	if ref != "" {
		if err := d.forget(key); err != nil {
			return SnapshotInfo{}, err
		}
	}
	return d.snapInfo(volume, snap)
}

func (d *dirDriver) snapInfo(volume, snap string) (SnapshotInfo, error) {
	file := d.snapFile(volume, snap)
	virt, alloc, _, err := statFile(file, formatQCOW2)
	if err != nil {
		return SnapshotInfo{}, d.notFound(volume, snap, err)
	}
	return SnapshotInfo{Volume: volume, Name: snap, Path: file, Format: formatQCOW2, VirtualSize: virt, Allocated: alloc, Created: birthTime(file)}, nil
}

func (d *dirDriver) DeleteSnapshot(ctx context.Context, volume, snap string) error {
	if err := checkName("volume", volume); err != nil {
		return err
	}
	if err := checkName("snapshot", snap); err != nil {
		return err
	}
	defer d.lock(volume)()
	if err := d.checkOwner(volume); err != nil {
		return err
	}
	final := d.snapFile(volume, snap)
	if ok, err := exists(final); err != nil || !ok {
		return d.notFound(volume, snap, orNotExist(err))
	}
	if u := d.users(volume, snap); len(u) > 0 {
		return newError(CodeSnapshotInUse, fmt.Sprintf("snapshot %s of %s is read by %s", snap, volume, strings.Join(u, ", ")), nil)
	}
	key := journalKey(volume, snap)
	if err := d.record(key, intent{Op: opDeleteSnapshot, Volume: volume, Snapshot: snap}); err != nil {
		return err
	}
	if err := os.Rename(final, d.snapTomb(volume, snap)); err != nil {
		d.forget(key)
		return d.ioError("delete snapshot "+snap, err)
	}
	if err := d.step("dir.delete-snapshot.renamed"); err != nil {
		return err
	}
	return d.finishDeleteSnapshot(volume, snap)
}

func (d *dirDriver) snapTomb(volume, snap string) string {
	return d.path(dirSnapshots, volume, d.tombName(snap)+".qcow2")
}

// finishDeleteSnapshot completes a recorded snapshot delete whose file is
// renamed to its tomb, or puts it back if a clone started reading it
// meanwhile (the clone wrote its ref before checking the snapshot was
// there, and we renamed before reading the refs, so one of us sees the
// other).
func (d *dirDriver) finishDeleteSnapshot(volume, snap string) error {
	key := journalKey(volume, snap)
	tomb := d.snapTomb(volume, snap)
	if ok, _ := exists(tomb); ok {
		if u := d.users(volume, snap); len(u) > 0 {
			if err := os.Rename(tomb, d.snapFile(volume, snap)); err != nil {
				return d.ioError("restore snapshot "+snap, err)
			}
			d.forget(key)
			return newError(CodeSnapshotInUse, fmt.Sprintf("snapshot %s of %s is read by %s", snap, volume, strings.Join(u, ", ")), nil)
		}
		d.dropRef(tomb, volume+"@"+snap)
		if err := os.Remove(tomb); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return d.ioError("delete snapshot "+snap, err)
		}
	}
	os.Remove(d.refDir(volume, snap))
	if err := fsyncDir(d.path(dirSnapshots, volume)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.ioError("sync", err)
	}
	return d.forget(key)
}

func (d *dirDriver) ListSnapshots(ctx context.Context, volume string) ([]SnapshotInfo, error) {
	if err := checkName("volume", volume); err != nil {
		return nil, err
	}
	names, err := listNames(d.path(dirSnapshots, volume), ".qcow2")
	if errors.Is(err, fs.ErrNotExist) {
		if ok, _ := exists(d.volFile(volume)); !ok {
			return nil, newError(CodeNotFound, "no volume "+volume, nil)
		}
		return nil, nil
	}
	if err != nil {
		return nil, d.ioError("list snapshots", err)
	}
	out := make([]SnapshotInfo, 0, len(names))
	for _, n := range names {
		si, err := d.snapInfo(volume, n)
		if ErrorCode(err) == CodeSnapshotNotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, si)
	}
	return out, nil
}
