package vmactor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
)

// pullPolicy maps a VM spec's pull policy to the cache's; empty keeps the
// agent-wide default (--image-pull-policy).
func pullPolicy(p string) images.PullPolicy {
	switch p {
	case messages.PullAlways:
		return images.PullAlways
	case messages.PullNever:
		return images.PullNever
	case messages.PullIfNotPresent:
		return images.PullIfNotPresent
	}
	return ""
}

// ImageInventory lists the cached bases with the VMs whose disks use them.
func (m *Manager) ImageInventory(ctx context.Context) ([]messages.NodeImage, error) {
	inv, err := m.cfg.Images.Inventory(ctx)
	if err != nil {
		return nil, imageAPIError(err)
	}
	out := make([]messages.NodeImage, 0, len(inv))
	for _, b := range inv {
		img := messages.NodeImage{Pool: b.Pool, SHA256: b.SHA256, Aliases: b.Aliases, URLs: b.URLs,
			SizeBytes: b.SizeBytes, VirtualSizeBytes: b.VirtualSize, VMs: []string{}}
		if img.Aliases == nil {
			img.Aliases = []string{}
		}
		if !b.LastUsed.IsZero() {
			t := b.LastUsed
			img.LastUsed = &t
		}
		for _, d := range b.Users {
			img.VMs = append(img.VMs, m.vmOfDisk(d))
		}
		out = append(out, img)
	}
	return out, nil
}

// vmOfDisk names the VM a disk belongs to: the agent names a VM's disk
// <id>.qcow2 in DiskDir; any other file is reported by its path.
func (m *Manager) vmOfDisk(disk string) string {
	if filepath.Dir(disk) == filepath.Clean(m.cfg.DiskDir) {
		if id, ok := strings.CutSuffix(filepath.Base(disk), ".qcow2"); ok {
			if _, err := os.Stat(m.vmStateDir(id)); err == nil {
				return id
			}
		}
	}
	return disk
}

// DeleteImage removes a cached base unless a VM disk's chain uses it.
func (m *Manager) DeleteImage(ctx context.Context, sha string) error {
	return imageAPIError(m.cfg.Images.Delete(ctx, sha))
}

// imageAPIError gives an image cache error its API kind.
func imageAPIError(err error) error {
	if err == nil {
		return nil
	}
	code := images.ErrorCode(err)
	switch code {
	case images.CodeInUse:
		return &messages.Error{Kind: messages.KindConflict, Code: code, Message: err.Error(), Err: err}
	case images.CodeNotFound:
		return &messages.Error{Kind: messages.KindNotFound, Code: code, Message: err.Error(), Err: err}
	case images.CodeSHA256Invalid:
		return &messages.Error{Kind: messages.KindInvalid, Code: code, Message: err.Error(), Err: err}
	}
	return fmt.Errorf("image cache: %w", err)
}

// RebaseRecords returns the images.RebaseHook that makes the VM records
// under stateDir follow a migrated base: the record whose disk is disk and
// whose base is oldBase names newBase (format newFormat) from then on.
// Call it only while no VM actor runs (before Manager.Recover): an actor
// writes its record from memory.
func RebaseRecords(stateDir string) images.RebaseHook {
	return func(disk, oldBase, newBase, newFormat string) error {
		entries, err := os.ReadDir(stateDir)
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			dir := filepath.Join(stateDir, e.Name())
			rec, err := loadRecord(dir)
			if err != nil || rec == nil || filepath.Clean(rec.Disk) != filepath.Clean(disk) {
				continue
			}
			// Records of agents before Base was kept have none: the disk's
			// header (now rebased) is what they go by.
			if rec.Base == "" || rec.Base == newBase || filepath.Clean(rec.Base) != filepath.Clean(oldBase) {
				continue
			}
			rec.Base, rec.BaseFormat = newBase, newFormat
			if err := rec.save(dir); err != nil {
				return fmt.Errorf("record of vm %s: %w", rec.ID, err)
			}
		}
		return nil
	}
}
