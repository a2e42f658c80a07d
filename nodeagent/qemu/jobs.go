package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Merging a snapshot out of a live chain, as a QEMU block job that runs
// while the guest does: block-commit copies images down into an image
// below them, block-stream copies images up into one above them. Either
// way the images in between leave the chain and their files can go.
//
// Each job has a fixed id per disk ("commit-<disk>", "stream-<disk>"), so
// an agent restarted in the middle finds its job again: Commit and Stream
// first look for a job of their id and wait for it rather than starting a
// second one. Jobs are started with auto-dismiss off, so their outcome
// stays readable in query-jobs until the agent has seen it (job-dismiss).

// CommitRequest merges the images from Top down to just above Base into
// Base (block-commit).
type CommitRequest struct {
	Disk string // disk id
	// Top is the topmost image merged: a snapshot's image, or the active
	// one (then the job ends with Base as the disk's active image).
	Top string
	// Base is the image merged into. It must be one of the disk's own
	// images (TopNode or an OverlayNode), never a backing image it was
	// attached with (BackingNode, base0), which other disks may share.
	Base string
	// BasePath is Base's path: the image above Top names it as its
	// backing file from then on (not used when Top is the active image).
	BasePath string
	// Speed limits the job's copying, bytes/s; 0 is no limit.
	Speed int64
}

// StreamRequest copies the images between Into and Base up into Into
// (block-stream), so that Into no longer needs them.
type StreamRequest struct {
	Disk string // disk id
	// Into receives the data: one of the disk's own images.
	Into string
	// Base is the image that stays Into's backing; "" copies everything
	// and leaves Into with no backing file.
	Base     string
	BasePath string // Base's path, named in Into's header from then on
	// Speed limits the job's copying, bytes/s; 0 is no limit.
	Speed int64
}

// MergeResult is a finished merge.
type MergeResult struct {
	// Removed are the images that left the chain, top first; their nodes
	// and QEMU's descriptors are gone. The caller deletes the files of
	// those that are the disk's own (OwnImage).
	Removed []ChainLayer
}

// OwnImage says whether node is an image of disk id itself (its first
// top image or a snapshot overlay), not a backing image it was attached
// with and may share with other disks.
func OwnImage(id, node string) bool {
	if node == TopNode(id) {
		return true
	}
	rest, ok := strings.CutPrefix(node, id+"-s")
	return ok && rest != "" && !strings.Contains(rest, "-")
}

// Commit runs block-commit for r and waits for it (completing it when it
// reaches ready, for an active commit). The VM keeps running throughout.
//
// Errors: ErrInvalidDisk, ErrDiskNotFound, ErrInsufficientStorage,
// ErrBlockJobFailed (the chain is as it was), or QEMU's.
func (m *Monitor) Commit(ctx context.Context, r CommitRequest) (MergeResult, error) {
	id := "commit-" + r.Disk
	if res, ok, err := m.resumeJob(ctx, r.Disk, id); ok || err != nil {
		return res, err
	}
	chain, err := m.Chain(ctx, r.Disk)
	if err != nil {
		return MergeResult{}, err
	}
	t, b := layerIndex(chain, r.Top), layerIndex(chain, r.Base)
	switch {
	case t < 0 || b < 0:
		return MergeResult{}, ErrDiskNotFound.with(nil, "disk %s has no image %q or %q in its chain", r.Disk, r.Top, r.Base)
	case t >= b:
		return MergeResult{}, ErrInvalidDisk.with(nil, "disk %s: %s is not above %s", r.Disk, r.Top, r.Base)
	case !OwnImage(r.Disk, r.Base):
		return MergeResult{}, ErrInvalidDisk.with(nil, "disk %s: %s is a shared backing image: nothing is merged into it", r.Disk, r.Base)
	}
	if t > 0 && (r.BasePath == "" || !filepath.IsAbs(r.BasePath)) {
		return MergeResult{}, ErrInvalidDisk.with(nil, "disk %s: base path %q: want an absolute path", r.Disk, r.BasePath)
	}
	// QEMU reopens Base, and the image above Top (its header changes),
	// read-write for the job: their fdsets need a read-write descriptor.
	if err := m.ensureWritable(ctx, chain[b]); err != nil {
		return MergeResult{}, err
	}
	if t > 0 {
		if err := m.ensureWritable(ctx, chain[t-1]); err != nil {
			return MergeResult{}, err
		}
	}
	args := map[string]any{"job-id": id, "device": chain[0].Node, "top-node": r.Top, "base-node": r.Base,
		"auto-dismiss": false}
	if r.Speed > 0 {
		args["speed"] = r.Speed
	}
	if t > 0 {
		args["backing-file"] = r.BasePath
	}
	if err := m.runJob(ctx, id, "block-commit", args); err != nil {
		return MergeResult{}, fmt.Errorf("qemu: commit %s into %s: %w", r.Top, r.Base, err)
	}
	removed := chain[t:b]
	return MergeResult{Removed: removed}, m.removeNodes(ctx, layerNodes(removed))
}

// Stream runs block-stream for r and waits for it.
//
// Errors: as Commit's.
func (m *Monitor) Stream(ctx context.Context, r StreamRequest) (MergeResult, error) {
	id := "stream-" + r.Disk
	if res, ok, err := m.resumeJob(ctx, r.Disk, id); ok || err != nil {
		return res, err
	}
	chain, err := m.Chain(ctx, r.Disk)
	if err != nil {
		return MergeResult{}, err
	}
	in, b := layerIndex(chain, r.Into), len(chain)
	if r.Base != "" {
		b = layerIndex(chain, r.Base)
	}
	switch {
	case in < 0 || b < 0:
		return MergeResult{}, ErrDiskNotFound.with(nil, "disk %s has no image %q or %q in its chain", r.Disk, r.Into, r.Base)
	case in >= b:
		return MergeResult{}, ErrInvalidDisk.with(nil, "disk %s: %s is not above %s", r.Disk, r.Into, r.Base)
	case !OwnImage(r.Disk, r.Into):
		return MergeResult{}, ErrInvalidDisk.with(nil, "disk %s: %s is a shared backing image: nothing is streamed into it", r.Disk, r.Into)
	case r.Base != "" && (r.BasePath == "" || !filepath.IsAbs(r.BasePath)):
		return MergeResult{}, ErrInvalidDisk.with(nil, "disk %s: base path %q: want an absolute path", r.Disk, r.BasePath)
	}
	if err := m.ensureWritable(ctx, chain[in]); err != nil {
		return MergeResult{}, err
	}
	args := map[string]any{"job-id": id, "device": r.Into, "auto-dismiss": false}
	if r.Speed > 0 {
		args["speed"] = r.Speed
	}
	if r.Base != "" {
		args["base-node"], args["backing-file"] = r.Base, r.BasePath
	}
	if err := m.runJob(ctx, id, "block-stream", args); err != nil {
		return MergeResult{}, fmt.Errorf("qemu: stream into %s: %w", r.Into, err)
	}
	removed := chain[in+1 : b]
	return MergeResult{Removed: removed}, m.removeNodes(ctx, layerNodes(removed))
}

// resumeJob waits for job id of a previous agent, if QEMU still has it
// (running, or concluded and not dismissed), and then removes the images
// it took out of disk's chain: the previous agent died before it could.
// ok is false when there is no such job.
func (m *Monitor) resumeJob(ctx context.Context, disk, id string) (res MergeResult, ok bool, err error) {
	if err := checkDiskID(disk); err != nil {
		return res, false, err
	}
	if _, ok, err := m.job(ctx, id); err != nil || !ok {
		return res, false, err
	}
	if err := m.runJob(ctx, id, "", nil); err != nil {
		return res, true, fmt.Errorf("qemu: resume job %s: %w", id, err)
	}
	removed, err := m.DropOrphans(ctx, disk)
	return MergeResult{Removed: removed}, true, err
}

// DropOrphans removes the block nodes of disk id that are in no chain any
// more, with QEMU's descriptors of their images, and returns them: what a
// step interrupted by the agent's death left behind (an overlay added for
// a snapshot whose transaction never ran, the images a merge took out of
// the chain, nodes of a hot-plug that never got its device). The caller
// deletes the files of those that are the disk's own (OwnImage) and not
// named by its records. A disk with no device (a hot-plug interrupted
// before device_add) has every node dropped.
func (m *Monitor) DropOrphans(ctx context.Context, id string) ([]ChainLayer, error) {
	if err := checkDiskID(id); err != nil {
		return nil, err
	}
	chain, err := m.Chain(ctx, id)
	if err != nil && !errors.Is(err, ErrDiskNotFound) {
		return nil, err
	}
	inChain := map[string]bool{}
	for _, l := range chain {
		inChain[l.Node], inChain[l.FileNode] = true, true
	}
	all, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		return nil, err
	}
	files := map[string]BlockNode{}
	for _, n := range all {
		if n.Driver == "file" {
			files[n.Node] = n
		}
	}
	sets, err := m.QueryFDSets(ctx)
	if err != nil {
		return nil, err
	}
	paths := map[int]string{}
	for _, s := range sets {
		for _, fd := range s.FDs {
			if fd.Opaque != "" {
				paths[s.ID] = fd.Opaque
			}
		}
	}
	var orphans []ChainLayer
	for _, n := range all {
		if n.Driver == "file" || DiskOfNode(n.Node) != id || inChain[n.Node] {
			continue
		}
		l := ChainLayer{Node: n.Node, FDSet: -1, Format: n.Driver, VirtualSize: n.Image.VirtualSize, ReadOnly: n.ReadOnly}
		if f, ok := files[FileNode(n.Node)]; ok {
			l.FileNode, l.FDSet = f.Node, fdsetOf(f.File)
			l.Path = cmpOr(paths[l.FDSet], f.File)
		}
		orphans = append(orphans, l)
	}
	// A file node whose format node is already gone.
	for name, f := range files {
		if DiskOfNode(name) != id || inChain[name] || layerIndex(orphans, strings.TrimSuffix(name, "-file")) >= 0 {
			continue
		}
		set := fdsetOf(f.File)
		orphans = append(orphans, ChainLayer{FileNode: name, FDSet: set, Path: cmpOr(paths[set], f.File)})
	}
	return orphans, m.removeNodes(ctx, layerNodes(orphans))
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func layerIndex(chain []ChainLayer, node string) int {
	for i, l := range chain {
		if l.Node == node {
			return i
		}
	}
	return -1
}

// layerNodes lists the nodes of layers in blockdev-del's order: all format
// nodes (top first), then the file nodes with their fdsets.
func layerNodes(layers []ChainLayer) []blockNodeRef {
	var out []blockNodeRef
	for _, l := range layers {
		out = append(out, blockNodeRef{node: l.Node, fdset: -1})
	}
	for _, l := range layers {
		out = append(out, blockNodeRef{node: l.FileNode, fdset: l.FDSet})
	}
	return out
}

// ensureWritable adds a read-write descriptor of l's image to its fdset
// when QEMU opened it read-only, so QEMU can reopen it read-write.
func (m *Monitor) ensureWritable(ctx context.Context, l ChainLayer) error {
	if !l.ReadOnly || l.FDSet < 0 {
		return nil
	}
	if strings.HasPrefix(l.Path, "/dev/fdset/") {
		// Opened from the argv with no label: its set was made with the
		// access the VM needed, read-write for the VM's own disk.
		return nil
	}
	f, err := os.OpenFile(l.Path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("qemu: open %s: %w", l.Path, err)
	}
	defer f.Close()
	_, err = m.AddFD(ctx, f, l.FDSet, l.Path)
	return err
}

// jobCancelWait bounds how long a job cancelled because ctx ended is
// waited for, so it is dismissed and the chain left as it was.
const jobCancelWait = 10 * time.Second

// runJob starts job id with command and args, unless a job of that id
// already exists (a restarted agent's), and waits for it to conclude: a
// job that becomes ready is completed, a concluded one dismissed.
func (m *Monitor) runJob(ctx context.Context, id, command string, args map[string]any) error {
	// Subscribed before the job starts: its events can precede the reply,
	// and wait in the subscription's queue until read below.
	events, unsub := m.subscribe()
	defer unsub()
	// changed waits for the job's next status change.
	changed := func() error {
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return ErrMonitorClosed
				}
				if evID, _ := ev.Data["id"].(string); ev.Name == "JOB_STATUS_CHANGE" && evID == id {
					return nil
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if _, ok, err := m.job(ctx, id); err != nil {
		return err
	} else if !ok {
		if command == "" {
			return ErrBlockJobFailed.with(nil, "job %s vanished", id)
		}
		if err := m.execute(ctx, command, args, nil); err != nil {
			if isNoSpace(err) {
				return ErrInsufficientStorage.with(err, "no space for %s", command)
			}
			return err
		}
	}
	for {
		j, ok, err := m.job(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrBlockJobFailed.with(nil, "job %s vanished", id)
		}
		switch j.Status {
		case "ready":
			if err := m.execute(ctx, "job-complete", map[string]any{"id": id}, nil); err != nil {
				return err
			}
		case "concluded":
			if err := m.execute(ctx, "job-dismiss", map[string]any{"id": id}, nil); err != nil {
				return err
			}
			if j.Error != "" {
				if strings.Contains(j.Error, "No space left on device") {
					return ErrInsufficientStorage.with(errors.New(j.Error), "job %s ran out of space; the chain is as it was", id)
				}
				return ErrBlockJobFailed.with(errors.New(j.Error), "job %s failed; the chain is as it was", id)
			}
			return nil
		}
		if err := changed(); err != nil {
			if ctx.Err() != nil {
				m.cancelJob(id, events)
			}
			return err
		}
	}
}

// cancelJob cancels job id after its caller gave up, and dismisses it once
// concluded, on a ctx of its own.
func (m *Monitor) cancelJob(id string, events <-chan Event) {
	ctx, cancel := context.WithTimeout(context.Background(), jobCancelWait)
	defer cancel()
	_ = m.execute(ctx, "job-cancel", map[string]any{"id": id}, nil)
	for {
		j, ok, err := m.job(ctx, id)
		if err != nil || !ok {
			return
		}
		if j.Status == "concluded" {
			_ = m.execute(ctx, "job-dismiss", map[string]any{"id": id}, nil)
			return
		}
		select {
		case _, ok := <-events: // any event: look again
			if !ok {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// Job is one of QEMU's jobs as query-jobs reports it.
type Job struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Status  string `json:"status"`
	Current int64  `json:"current-progress"`
	Total   int64  `json:"total-progress"`
	Error   string `json:"error"`
}

// Jobs lists QEMU's jobs: a restarted agent finds its merges in progress
// (or concluded and not yet dismissed) here.
func (m *Monitor) Jobs(ctx context.Context) ([]Job, error) {
	var out []Job
	err := m.execute(ctx, "query-jobs", nil, &out)
	return out, err
}

func (m *Monitor) job(ctx context.Context, id string) (Job, bool, error) {
	jobs, err := m.Jobs(ctx)
	if err != nil {
		return Job{}, false, err
	}
	for _, j := range jobs {
		if j.ID == id {
			return j, true, nil
		}
	}
	return Job{}, false, nil
}
