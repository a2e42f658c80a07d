package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The owner marker (owners/VOL.json) fences a volume on a shared pool:
// the node named in it is the only one that may open or change the
// volume. It is created with link(2), which fails if a marker exists (on
// NFS too, where link is the classic lock primitive), and replaced with
// rename(2) only by a node holding a higher epoch from the control plane,
// which is the authority on who owns a volume.

func (p *pool) ownerPath(volume string) string {
	return p.path(dirOwners, volume+".json")
}

// readOwner returns the marker, or nil when there is none.
func (p *pool) readOwner(volume string) (*Owner, error) {
	b, err := os.ReadFile(p.ownerPath(volume))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, newError(CodeIO, "read owner marker", err)
	}
	var o Owner
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, newError(CodeIO, "owner marker of "+volume+" is unreadable", err)
	}
	return &o, nil
}

// checkOwner refuses a change to a volume another node owns.
func (p *pool) checkOwner(volume string) error {
	o, err := p.readOwner(volume)
	if err != nil {
		return err
	}
	if o != nil && o.Node != p.node {
		return newError(CodeOwnedByOtherNode, fmt.Sprintf("volume %s is owned by node %s (epoch %d)", volume, o.Node, o.Epoch), nil)
	}
	return nil
}

// claim writes this node's marker for volume at epoch.
func (p *pool) claim(ctx context.Context, volume string, epoch uint64) (*Owner, error) {
	want := Owner{Node: p.node, Epoch: epoch, Since: time.Now().UTC()}
	b, err := json.Marshal(want)
	if err != nil {
		return nil, err
	}
	// Two rounds: a marker can appear between our read and our link.
	for range 2 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cur, err := p.readOwner(volume)
		if err != nil {
			return nil, err
		}
		switch {
		case cur == nil:
			err := p.linkNew(p.ownerPath(volume), b)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return nil, p.ioError("write owner marker", err)
			}
			return &want, nil
		case cur.Node == p.node && epoch == cur.Epoch:
			return cur, nil
		case epoch > cur.Epoch:
			// The control plane moved the volume here (or re-issued it to
			// us): replace the marker.
			if err := p.writeAtomic(p.ownerPath(volume), b); err != nil {
				return nil, p.ioError("write owner marker", err)
			}
			return &want, nil
		default:
			return nil, newError(CodeOwnedByOtherNode, fmt.Sprintf("volume %s is owned by node %s at epoch %d; this node %s asked with epoch %d", volume, cur.Node, cur.Epoch, p.node, epoch), nil)
		}
	}
	return nil, newError(CodeOwnedByOtherNode, "volume "+volume+": owner marker changed while claiming it", nil)
}

// release removes this node's marker; another node's stays.
func (p *pool) release(volume string) error {
	cur, err := p.readOwner(volume)
	if err != nil || cur == nil || cur.Node != p.node {
		return err
	}
	if err := os.Remove(p.ownerPath(volume)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return newError(CodeIO, "remove owner marker", err)
	}
	return fsyncDir(p.path(dirOwners))
}

// linkNew writes data to a new file at path, failing with fs.ErrExist if
// one is there: temp file, fsync, link.
func (p *pool) linkNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, p.tempName(filepath.Base(path)))
	defer os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return fsyncDir(dir)
}
