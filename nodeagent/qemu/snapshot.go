package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SnapshotDisk is one disk of a live snapshot: the disk's active image
// becomes the snapshot (read-only from then on) and a new, empty overlay
// on it takes the guest's writes.
type SnapshotDisk struct {
	// ID is the disk (names.go).
	ID string
	// Seq numbers the overlay's node (OverlayNode): unique per disk,
	// 1-MaxSnapshotSeq; the snapshot's record keeps it.
	Seq int
	// Overlay is the new overlay's path. It must not exist: Snapshot
	// creates it, and removes it again if the snapshot fails.
	Overlay string
	// Backing is the path of the disk's active image now, which the
	// overlay's header names as its backing file for offline tools and a
	// restore. QEMU itself is told the backing node, not the path.
	Backing string
}

// SnapshotResult is what a live snapshot cost the guest.
type SnapshotResult struct {
	// Pause is the time from sending the QMP transaction to its return:
	// QEMU drains and holds guest I/O on every disk for that long (the
	// vCPUs keep running), so it bounds the guest-visible pause.
	Pause time.Duration
}

// beforeTransaction is a test seam: it runs after the overlays are added
// and before the transaction is sent.
var beforeTransaction func(ctx context.Context, m *Monitor)

// Snapshot takes a crash-consistent live snapshot of disks: every overlay
// is created and added as a block node first (the slow part, while the
// guest runs on), then one QMP transaction of blockdev-snapshot actions
// puts them all on top at once, so the snapshot images of all disks
// hold the same instant. A transaction is all or nothing: if any action
// fails, QEMU applies none, and Snapshot removes the overlays' nodes,
// descriptors and files. The VM keeps running on its previous chain.
//
// Errors: ErrInvalidDisk, ErrDiskNotFound, ErrInsufficientStorage (the
// node filled up making an overlay), or QEMU's.
func (m *Monitor) Snapshot(ctx context.Context, disks []SnapshotDisk) (res SnapshotResult, err error) {
	if len(disks) == 0 {
		return res, ErrInvalidDisk.with(nil, "snapshot of no disks")
	}
	seen := map[string]bool{}
	for _, d := range disks {
		if err := checkDiskID(d.ID); err != nil {
			return res, err
		}
		if seen[d.ID] {
			return res, ErrInvalidDisk.with(nil, "disk %s named twice in one snapshot", d.ID)
		}
		seen[d.ID] = true
		if d.Seq < 1 || d.Seq > MaxSnapshotSeq {
			return res, ErrInvalidDisk.with(nil, "disk %s: snapshot seq %d: want 1-%d", d.ID, d.Seq, MaxSnapshotSeq)
		}
		for _, p := range []string{d.Overlay, d.Backing} {
			if p == "" || !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
				return res, ErrInvalidDisk.with(nil, "disk %s: path %q: want an absolute path", d.ID, p)
			}
		}
	}
	type step struct {
		active string
		size   int64
	}
	steps := make([]step, len(disks))
	for i, d := range disks {
		chain, err := m.Chain(ctx, d.ID)
		if err != nil {
			return res, err
		}
		if chain[0].ReadOnly {
			// Its overlay would be writable, and a merge would write
			// into a volume attached read-only.
			return res, ErrInvalidDisk.with(nil, "disk %s is read-only: it has nothing to snapshot", d.ID)
		}
		if len(chain) >= MaxChainDepth {
			return res, ErrChainTooDeep.with(nil, "disk %s has %d images in its chain, at most %d", d.ID, len(chain), MaxChainDepth)
		}
		steps[i] = step{active: chain[0].Node, size: chain[0].VirtualSize}
	}

	var rv revert
	defer func() {
		if err != nil {
			rv.run()
		}
	}()
	actions := make([]map[string]any, 0, len(disks))
	for i, d := range disks {
		if err := createOverlay(ctx, d.Overlay, d.Backing, steps[i].size); err != nil {
			if isNoSpace(err) {
				return res, ErrInsufficientStorage.with(err, "snapshot of disk %s: no space for its overlay %s", d.ID, d.Overlay)
			}
			return res, fmt.Errorf("qemu: snapshot of disk %s: %w", d.ID, err)
		}
		overlay := d.Overlay
		rv.push(func(context.Context) { _ = os.Remove(overlay) })
		node := OverlayNode(d.ID, d.Seq)
		// No backing here: blockdev-snapshot attaches the active node.
		if err := m.addImage(ctx, &rv, node, d.Overlay, "qcow2", "", false); err != nil {
			if existsErr(err) {
				return res, ErrInvalidDisk.with(err, "disk %s already has a snapshot %d", d.ID, d.Seq)
			}
			return res, fmt.Errorf("qemu: snapshot of disk %s: %w", d.ID, err)
		}
		actions = append(actions, map[string]any{"type": "blockdev-snapshot",
			"data": map[string]any{"node": steps[i].active, "overlay": node}})
	}
	if beforeTransaction != nil {
		beforeTransaction(ctx, m)
	}
	start := time.Now()
	err = m.execute(ctx, "transaction", map[string]any{"actions": actions}, nil)
	res.Pause = time.Since(start)
	if err != nil {
		if isNoSpace(err) {
			return res, ErrInsufficientStorage.with(err, "snapshot: the node is out of space")
		}
		return res, fmt.Errorf("qemu: snapshot: %w", err)
	}
	return res, nil
}

// qemuImg is the qemu-img the agent runs to make overlays.
var qemuImgBinary = "qemu-img"

// createOverlay makes an empty qcow2 of size at path whose header names
// backing (a qcow2) as its backing file. -u: qemu-img need not open the
// backing, which QEMU holds locked. The file is created exclusively, so an
// existing file (another snapshot's) is never truncated.
func createOverlay(ctx context.Context, path, backing string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	f.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, qemuImgBinary, "create", "-q", "-f", "qcow2", "-u",
		"-F", "qcow2", "-b", backing, path, strconv.FormatInt(size, 10))
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(path)
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "No space left on device") || strings.Contains(msg, "Disk quota exceeded") {
			return &noSpaceError{msg}
		}
		return fmt.Errorf("qemu-img create %s: %v: %s", path, err, msg)
	}
	return nil
}

// noSpaceError is qemu-img's report of a full filesystem.
type noSpaceError struct{ msg string }

func (e *noSpaceError) Error() string { return "qemu-img: " + e.msg }
