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

// dirDriver keeps each volume as one qcow2 file, volumes/NAME.qcow2, and
// each offline snapshot as one qcow2 file, snapshots/VOL/SNAP.qcow2.
//
// On a filesystem with reflinks (xfs with reflink=1, btrfs) snapshots and
// clones are FICLONE copies: independent files sharing extents, made in
// O(metadata). Elsewhere (ext4) a snapshot is a sparse copy and a clone
// of a snapshot is a qcow2 overlay backed by the snapshot file, which then
// may not be deleted while the clone reads it: refs/VOL/SNAP/ID records
// each such reader.
type dirDriver struct {
	*pool
	// reflink is whether the pool's filesystem clones files (probed once).
	reflink bool
}

var _ Driver = (*dirDriver)(nil)

func newDir(cfg Config) (*dirDriver, error) {
	p, err := newPool(cfg)
	if err != nil {
		return nil, err
	}
	d := &dirDriver{pool: p}
	d.reflink = probeReflink(p.path(dirVolumes), p.tempName)
	return d, nil
}

func (d *dirDriver) Name() string { return DriverDir }

// Reflink reports whether clones and snapshots are reflink copies.
func (d *dirDriver) Reflink() bool { return d.reflink }

func (d *dirDriver) volFile(name string) string {
	return d.path(dirVolumes, name+".qcow2")
}

func (d *dirDriver) snapFile(volume, snap string) string {
	return d.path(dirSnapshots, volume, snap+".qcow2")
}

func (d *dirDriver) refDir(volume, snap string) string {
	return d.path(dirRefs, volume, snap)
}

// commitFile makes tmp appear at final: fsync, then link(2), which fails
// instead of replacing a file that appeared meanwhile.
func (d *dirDriver) commitFile(tmp, final, point string) error {
	if err := fsyncPath(tmp); err != nil {
		return d.ioError("sync", err)
	}
	if err := os.Link(tmp, final); err != nil {
		return err
	}
	if err := d.step(point); err != nil {
		return err
	}
	if err := fsyncDir(filepath.Dir(final)); err != nil {
		return d.ioError("sync directory", err)
	}
	os.Remove(tmp)
	return nil
}

func (d *dirDriver) Create(ctx context.Context, o CreateOptions) (info Info, err error) {
	if err := o.check(); err != nil {
		return Info{}, err
	}
	defer d.lock(o.Name)()
	if err := d.checkOwner(o.Name); err != nil {
		return Info{}, err
	}
	final := d.volFile(o.Name)
	if ok, err := exists(final); err != nil || ok {
		return Info{}, existsError(o.Name, err)
	}
	size := o.Size
	args := []string{"create", "-q", "-f", formatQCOW2}
	if o.Base != "" {
		format, baseSize, err := baseInfo(o.Base)
		if err != nil {
			return Info{}, err
		}
		if size == 0 {
			size = baseSize
		}
		if size < baseSize {
			return Info{}, newError(CodeSizeInvalid, fmt.Sprintf("size %d is smaller than base %s of %d bytes", size, o.Base, baseSize), nil)
		}
		args = append(args, "-F", format, "-b", o.Base)
	}
	tmp := d.path(dirVolumes, d.tempName(o.Name))
	defer undoOnError(&err, func() { os.Remove(tmp) })
	if err := d.qemuImgRun(ctx, append(args, tmp, sizeArg(size))...); err != nil {
		return Info{}, d.ioError("create volume "+o.Name, err)
	}
	if err := d.step("dir.create.written"); err != nil {
		return Info{}, err
	}
	if err := d.commitFile(tmp, final, "dir.create.linked"); err != nil {
		return Info{}, d.commitError(o.Name, err)
	}
	return d.stat(o.Name)
}

func existsError(name string, err error) error {
	if err != nil {
		return newError(CodeIO, "look up "+name, err)
	}
	return newError(CodeExists, "volume "+name+" already exists", nil)
}

func (d *dirDriver) commitError(name string, err error) error {
	if isCrash(err) || ErrorCode(err) != "" {
		return err
	}
	if errors.Is(err, fs.ErrExist) {
		return newError(CodeExists, "volume "+name+" already exists", nil)
	}
	return d.ioError("commit "+name, err)
}

func (d *dirDriver) Clone(ctx context.Context, o CloneOptions) (info Info, err error) {
	if err := o.check(); err != nil {
		return Info{}, err
	}
	defer d.lock(o.Name, o.Source)()
	if err := d.checkOwner(o.Name); err != nil {
		return Info{}, err
	}
	src := d.volFile(o.Source)
	if o.Snapshot != "" {
		src = d.snapFile(o.Source, o.Snapshot)
	} else if err := d.checkOwner(o.Source); err != nil {
		// Another node may be writing it: a copy would be torn.
		return Info{}, err
	}
	h, err := readHeader(src)
	if err != nil {
		return Info{}, d.notFound(o.Source, o.Snapshot, err)
	}
	size := int64(h.Size)
	if o.Size != 0 && o.Size < size {
		return Info{}, newError(CodeShrinkUnsupported, fmt.Sprintf("clone of %d bytes is smaller than its source's %d", o.Size, size), nil)
	}
	size = max(size, o.Size)
	final := d.volFile(o.Name)
	if ok, err := exists(final); err != nil || ok {
		return Info{}, existsError(o.Name, err)
	}

	// Without reflinks a snapshot is cloned as an overlay on it; otherwise
	// the clone is a copy and reads what its source reads.
	overlay := !d.reflink && o.Snapshot != ""
	backing := src
	if !overlay {
		if backing, err = backingOf(src); err != nil {
			return Info{}, d.ioError("read "+src, err)
		}
	}
	key := journalKey(o.Name, "")
	ref, err := d.addRef(key, o.Name, final, backing)
	if err != nil {
		return Info{}, err
	}
	tmp := d.path(dirVolumes, d.tempName(o.Name))
	defer undoOnError(&err, func() {
		os.Remove(tmp)
		if ref != "" {
			os.Remove(ref)
		}
		d.forget(key)
	})
	if err := d.step("dir.clone.ref"); err != nil {
		return Info{}, err
	}
	if overlay {
		// A DeleteSnapshot on another node renames the snapshot away
		// before it reads the refs; seeing it still here after our ref is
		// written means that delete will see the ref.
		if ok, _ := exists(src); !ok {
			return Info{}, d.notFound(o.Source, o.Snapshot, fs.ErrNotExist)
		}
		if err := d.qemuImgRun(ctx, "create", "-q", "-f", formatQCOW2, "-F", formatQCOW2, "-b", src, tmp, sizeArg(size)); err != nil {
			return Info{}, d.ioError("clone "+o.Name, err)
		}
	} else {
		if err := d.copyTo(ctx, tmp, src); err != nil {
			return Info{}, d.ioError("clone "+o.Name, err)
		}
		if size > int64(h.Size) {
			if err := d.qemuImgRun(ctx, "resize", "-q", "-f", formatQCOW2, tmp, sizeArg(size)); err != nil {
				return Info{}, d.ioError("grow clone "+o.Name, err)
			}
		}
	}
	if err := d.step("dir.clone.written"); err != nil {
		return Info{}, err
	}
	if err := d.commitFile(tmp, final, "dir.clone.linked"); err != nil {
		return Info{}, d.commitError(o.Name, err)
	}
	if err := d.forget(key); err != nil {
		return Info{}, err
	}
	return d.stat(o.Name)
}

// copyTo copies src to a new file at dst (reflink or sparse copy).
func (d *dirDriver) copyTo(ctx context.Context, dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = copyFile(ctx, out, in, d.reflink)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d *dirDriver) notFound(volume, snap string, err error) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return d.ioError("read "+volume, err)
	}
	if snap != "" {
		return newError(CodeSnapshotNotFound, "volume "+volume+" has no snapshot "+snap, nil)
	}
	return newError(CodeNotFound, "no volume "+volume, nil)
}

func (d *dirDriver) Resize(ctx context.Context, volume string, size int64) (Info, error) {
	if err := checkName("volume", volume); err != nil {
		return Info{}, err
	}
	if err := checkSize(size); err != nil {
		return Info{}, err
	}
	defer d.lock(volume)()
	if err := d.checkOwner(volume); err != nil {
		return Info{}, err
	}
	file := d.volFile(volume)
	h, err := readHeader(file)
	if err != nil {
		return Info{}, d.notFound(volume, "", err)
	}
	if size < int64(h.Size) {
		return Info{}, newError(CodeShrinkUnsupported, fmt.Sprintf("volume %s has %d bytes; %d would shrink it", volume, h.Size, size), nil)
	}
	if size > int64(h.Size) {
		// qemu-img grows a qcow2 in place; the journal lets Recover
		// finish a resize a crash interrupted.
		if err := d.record(volume, intent{Op: opResize, Volume: volume, Size: size}); err != nil {
			return Info{}, err
		}
		if err := d.step("dir.resize.recorded"); err != nil {
			return Info{}, err
		}
		if err := d.grow(ctx, file, size); err != nil {
			d.forget(volume)
			return Info{}, err
		}
		if err := d.step("dir.resize.done"); err != nil {
			return Info{}, err
		}
		if err := d.forget(volume); err != nil {
			return Info{}, err
		}
	}
	return d.stat(volume)
}

func (d *dirDriver) grow(ctx context.Context, file string, size int64) error {
	if err := d.qemuImgRun(ctx, "resize", "-q", "-f", formatQCOW2, file, sizeArg(size)); err != nil {
		return d.ioError("resize "+filepath.Base(file), err)
	}
	if err := fsyncPath(file); err != nil {
		return d.ioError("sync", err)
	}
	return nil
}

func (d *dirDriver) Delete(ctx context.Context, volume string) error {
	if err := checkName("volume", volume); err != nil {
		return err
	}
	defer d.lock(volume)()
	if err := d.checkOwner(volume); err != nil {
		return err
	}
	file := d.volFile(volume)
	if ok, err := exists(file); err != nil || !ok {
		return d.notFound(volume, "", orNotExist(err))
	}
	snaps, err := listNames(d.path(dirSnapshots, volume), ".qcow2")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.ioError("list snapshots", err)
	}
	for _, s := range snaps {
		if u := d.users(volume, s); len(u) > 0 {
			return newError(CodeSnapshotInUse, fmt.Sprintf("snapshot %s of %s is read by %s", s, volume, strings.Join(u, ", ")), nil)
		}
	}
	if err := d.record(volume, intent{Op: opDelete, Volume: volume}); err != nil {
		return err
	}
	if err := d.step("dir.delete.recorded"); err != nil {
		return err
	}
	// Renamed away first, the volume is gone for List and Stat at once;
	// the rest is cleanup Recover can finish.
	if err := os.Rename(file, d.path(dirVolumes, d.tombName(volume)+".qcow2")); err != nil {
		d.forget(volume)
		return d.ioError("delete "+volume, err)
	}
	if err := d.step("dir.delete.renamed"); err != nil {
		return err
	}
	return d.finishDelete(volume)
}

func orNotExist(err error) error {
	if err == nil {
		return fs.ErrNotExist
	}
	return err
}

// finishDelete removes what is left of a volume whose delete is recorded:
// its snapshots not read by anyone, its tomb, its owner marker. Each step
// tolerates having been done already.
func (d *dirDriver) finishDelete(volume string) error {
	snapDir := d.path(dirSnapshots, volume)
	snaps, _ := listNames(snapDir, ".qcow2")
	for _, s := range snaps {
		// A snapshot a clone on another node started reading meanwhile
		// stays: the clone needs it more than we need the space.
		if len(d.users(volume, s)) > 0 {
			continue
		}
		f := d.snapFile(volume, s)
		d.dropRef(f, volume+"@"+s)
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return d.ioError("delete snapshot "+s, err)
		}
		if err := d.step("dir.delete.snapshot"); err != nil {
			return err
		}
	}
	os.Remove(snapDir)
	os.Remove(d.path(dirRefs, volume))
	tomb := d.path(dirVolumes, d.tombName(volume)+".qcow2")
	d.dropRef(tomb, volume)
	if err := os.Remove(tomb); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d.ioError("delete "+volume, err)
	}
	if err := d.release(volume); err != nil {
		return err
	}
	if err := fsyncDir(d.path(dirVolumes)); err != nil {
		return d.ioError("sync", err)
	}
	return d.forget(volume)
}

func (d *dirDriver) Stat(ctx context.Context, volume string) (Info, error) {
	if err := checkName("volume", volume); err != nil {
		return Info{}, err
	}
	return d.stat(volume)
}

func (d *dirDriver) stat(volume string) (Info, error) {
	file := d.volFile(volume)
	virt, alloc, chain, err := statFile(file, formatQCOW2)
	if err != nil {
		return Info{}, d.notFound(volume, "", err)
	}
	owner, err := d.readOwner(volume)
	if err != nil {
		return Info{}, err
	}
	return Info{Name: volume, Path: file, Format: formatQCOW2, VirtualSize: virt, Allocated: alloc, Chain: chain, Owner: owner}, nil
}

func (d *dirDriver) List(ctx context.Context, after string, limit int) (Page, error) {
	return d.list(ctx, after, limit, ".qcow2")
}

func (d *dirDriver) Open(ctx context.Context, volume string, epoch uint64) (Info, error) {
	if err := checkName("volume", volume); err != nil {
		return Info{}, err
	}
	defer d.lock(volume)()
	if ok, err := exists(d.volFile(volume)); err != nil || !ok {
		return Info{}, d.notFound(volume, "", orNotExist(err))
	}
	if _, err := d.claim(ctx, volume, epoch); err != nil {
		return Info{}, err
	}
	return d.stat(volume)
}

func (d *dirDriver) Release(ctx context.Context, volume string) error {
	if err := checkName("volume", volume); err != nil {
		return err
	}
	defer d.lock(volume)()
	return d.release(volume)
}
