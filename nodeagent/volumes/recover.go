package volumes

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
)

// Recover of each driver: the journal's records resolved one by one,
// then this node's temporaries removed.

func (d *dirDriver) Recover(ctx context.Context) (RecoverReport, error) {
	var rep RecoverReport
	journal, keys, err := d.pending()
	if err != nil {
		return rep, err
	}
	for _, key := range keys {
		in := journal[key]
		switch in.Op {
		case opRef:
			if ok, _ := exists(in.File); ok {
				rep.Completed = append(rep.Completed, in.String())
			} else {
				os.Remove(in.Ref)
				os.Remove(filepath.Dir(in.Ref))
				rep.RolledBack = append(rep.RolledBack, in.String())
			}
			err = d.forget(key)
		case opResize:
			if h, rerr := readHeader(d.volFile(in.Volume)); rerr == nil && int64(h.Size) < in.Size {
				err = d.grow(ctx, d.volFile(in.Volume), in.Size)
			}
			if err == nil {
				err = d.forget(key)
			}
			rep.Completed = append(rep.Completed, in.String())
		case opDelete:
			if ok, _ := exists(d.volFile(in.Volume)); ok {
				// The crash came before the rename: nothing was deleted.
				err = d.forget(key)
				rep.RolledBack = append(rep.RolledBack, in.String())
			} else {
				err = d.finishDelete(in.Volume)
				rep.Completed = append(rep.Completed, in.String())
			}
		case opDeleteSnapshot:
			if ok, _ := exists(d.snapFile(in.Volume, in.Snapshot)); ok {
				err = d.forget(key)
				rep.RolledBack = append(rep.RolledBack, in.String())
			} else {
				err = d.finishDeleteSnapshot(in.Volume, in.Snapshot)
				if ErrorCode(err) == CodeSnapshotInUse {
					err = nil
					rep.RolledBack = append(rep.RolledBack, in.String())
				} else {
					rep.Completed = append(rep.Completed, in.String())
				}
			}
		default:
			err = newError(CodeIO, "journal "+key+" has unknown op "+quote(in.Op), nil)
		}
		if err != nil {
			return rep, err
		}
	}
	n, err := d.removeTemps(func(path string, _ fs.DirEntry) error { return os.Remove(path) })
	rep.TempsRemoved = n
	return rep, err
}

func (b *btrfsDriver) Recover(ctx context.Context) (RecoverReport, error) {
	var rep RecoverReport
	journal, keys, err := b.pending()
	if err != nil {
		return rep, err
	}
	for _, key := range keys {
		in := journal[key]
		switch in.Op {
		case opDelete:
			if isSubvolume(b.volDir(in.Volume)) {
				err = b.forget(key)
				rep.RolledBack = append(rep.RolledBack, in.String())
			} else {
				err = b.finishDelete(in.Volume)
				rep.Completed = append(rep.Completed, in.String())
			}
		default:
			err = newError(CodeIO, "journal "+key+" has unknown op "+quote(in.Op), nil)
		}
		if err != nil {
			return rep, err
		}
	}
	n, err := b.removeTemps(func(path string, e fs.DirEntry) error {
		if e.IsDir() && isSubvolume(path) {
			return subvolDelete(path)
		}
		return os.RemoveAll(path)
	})
	rep.TempsRemoved = n
	if err == nil && n > 0 {
		if serr := b.syncfs(); serr != nil {
			err = b.ioError("sync", serr)
		}
	}
	return rep, err
}
