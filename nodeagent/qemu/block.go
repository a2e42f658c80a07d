package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The live block layer: one typed method per QMP command that changes or
// reads a running VM's disks. The higher-level operations (AttachDisk,
// DetachDisk, Snapshot, Commit, Stream) are built from these in
// hotplug.go, snapshot.go and jobs.go.
//
// QEMU opens no file by path, here as at start (argv.go): the agent opens
// each image and passes the descriptor over the QMP socket (add-fd), and
// QEMU opens "/dev/fdset/N", which dups a descriptor of the set with the
// access mode it wants. So a reopen read-write (a commit into a backing
// image) needs a read-write descriptor in that image's set first.

// execute runs one QMP command with args (nil for none) and decodes its
// return value into out (nil to ignore it).
func (m *Monitor) execute(ctx context.Context, name string, args, out any) error {
	return m.executeFD(ctx, name, args, out, nil)
}

func (m *Monitor) executeFD(ctx context.Context, name string, args, out any, f *os.File) error {
	cmd := map[string]json.RawMessage{}
	cmd["execute"], _ = json.Marshal(name)
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("qemu: qmp %s: %w", name, err)
		}
		cmd["arguments"] = b
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	ret, err := m.runOOB(ctx, name, cmd, oob)
	// f must stay open until sendmsg has copied it into the message.
	runtime.KeepAlive(f)
	if err != nil {
		return err
	}
	if out == nil || len(ret) == 0 {
		return nil
	}
	if err := json.Unmarshal(ret, out); err != nil {
		return fmt.Errorf("qemu: qmp %s: decode reply: %w", name, err)
	}
	return nil
}

// FDInfo is one descriptor added to an fdset.
type FDInfo struct {
	FDSet int `json:"fdset-id"`
	FD    int `json:"fd"`
}

// NewFDSet asks AddFD for a new fdset. QEMU numbers sets from 0.
const NewFDSet = -1

// AddFD passes f to QEMU, into fdset set (or a new set: NewFDSet), with
// opaque as its label; QEMU can then open "/dev/fdset/<set>" with f's
// access mode. f stays the caller's to close: QEMU holds its own copy.
// opaque is how the agent reads a live chain back to paths (QueryFDSets),
// so it is the image's path.
func (m *Monitor) AddFD(ctx context.Context, f *os.File, set int, opaque string) (FDInfo, error) {
	args := map[string]any{}
	if set >= 0 {
		args["fdset-id"] = set
	}
	if opaque != "" {
		args["opaque"] = opaque
	}
	// A descriptor QEMU received waits in the socket for the next command
	// that takes one: only one add-fd may be in flight.
	m.fdMu.Lock()
	defer m.fdMu.Unlock()
	var info FDInfo
	err := m.executeFD(ctx, "add-fd", args, &info, f)
	return info, err
}

// RemoveFDSet closes every descriptor of an fdset in QEMU. QEMU keeps a
// set whose descriptors a block node still uses until that node is gone.
func (m *Monitor) RemoveFDSet(ctx context.Context, set int) error {
	return m.execute(ctx, "remove-fd", map[string]any{"fdset-id": set}, nil)
}

// FDSet is one of QEMU's fdsets as query-fdsets reports it.
type FDSet struct {
	ID  int `json:"fdset-id"`
	FDs []struct {
		FD     int    `json:"fd"`
		Opaque string `json:"opaque"`
	} `json:"fds"`
}

// QueryFDSets lists QEMU's fdsets, with the opaque labels (image paths)
// the agent gave each descriptor.
func (m *Monitor) QueryFDSets(ctx context.Context) ([]FDSet, error) {
	var out []FDSet
	err := m.execute(ctx, "query-fdsets", nil, &out)
	return out, err
}

// fdsetOf returns N of a "/dev/fdset/N" filename, or -1.
func fdsetOf(filename string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(filename, "/dev/fdset/"))
	if err != nil || n < 0 || !strings.HasPrefix(filename, "/dev/fdset/") {
		return -1
	}
	return n
}

// BlockdevAdd adds one block node; opts is QEMU's BlockdevOptions as JSON
// (driver, node-name, …).
func (m *Monitor) BlockdevAdd(ctx context.Context, opts map[string]any) error {
	return m.execute(ctx, "blockdev-add", opts, nil)
}

// BlockdevDel removes a block node nothing uses any more.
func (m *Monitor) BlockdevDel(ctx context.Context, node string) error {
	return m.execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
}

// DeviceAdd adds a device; props is device_add's arguments (driver, id,
// bus, …).
func (m *Monitor) DeviceAdd(ctx context.Context, props map[string]any) error {
	return m.execute(ctx, "device_add", props, nil)
}

// DeviceDel asks for a device's removal. For a hot-plugged PCI device this
// only starts it: the guest must release the device, and QEMU says
// DEVICE_DELETED when it has.
func (m *Monitor) DeviceDel(ctx context.Context, id string) error {
	return m.execute(ctx, "device_del", map[string]any{"id": id}, nil)
}

// BlockResize sets the virtual size of a block node; the guest's virtio-blk
// device sees the new capacity at once (a config-change interrupt).
func (m *Monitor) BlockResize(ctx context.Context, node string, size int64) error {
	return m.execute(ctx, "block_resize", map[string]any{"node-name": node, "size": size}, nil)
}

// BlockNode is one block node as query-named-block-nodes reports it.
type BlockNode struct {
	Node     string `json:"node-name"`
	Driver   string `json:"drv"`
	File     string `json:"file"` // "/dev/fdset/N" for a file node of ours
	ReadOnly bool   `json:"ro"`
	Image    struct {
		VirtualSize int64  `json:"virtual-size"`
		ActualSize  int64  `json:"actual-size"`
		Format      string `json:"format"`
		// BackingImage nests the chain below; its filenames are the
		// fdset names too.
		BackingFilename string `json:"backing-filename"`
	} `json:"image"`
	BackingFileDepth int `json:"backing_file_depth"`
}

// QueryNamedBlockNodes lists every named block node (flat: the chain below
// each node is not expanded).
func (m *Monitor) QueryNamedBlockNodes(ctx context.Context) ([]BlockNode, error) {
	var out []BlockNode
	err := m.execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &out)
	return out, err
}

// ChainLayer is one image of a disk's live chain.
type ChainLayer struct {
	Node        string // format node: "<disk>", "<disk>-s<seq>", "<disk>-b<i>"
	FileNode    string // its protocol (file) node
	FDSet       int    // the fdset QEMU opened the image through; -1 if none
	Path        string // the image's path, as the agent labelled its descriptor
	Format      string // "qcow2", "raw"
	VirtualSize int64
	ReadOnly    bool
}

// Chain reads back the live chain of disk id's device, the active image
// first and the bottom backing image last. The device's top node comes
// from its drive property; the chain below it is walked along the "backing" and
// "file" edges of x-debug-query-block-graph, because the filenames QEMU
// reports for nodes with an explicit backing are "json:{…}" pseudo-names
// that cannot be matched. The command is marked unstable but has not
// changed from QEMU 4.0 to 9.x; a QEMU without it fails here, and only
// here. Paths come from the labels the agent gave its descriptors.
func (m *Monitor) Chain(ctx context.Context, id string) ([]ChainLayer, error) {
	if err := checkDiskID(id); err != nil {
		return nil, err
	}
	// The device's drive property names its top node; query-block would
	// too, with the whole chain's image info around it (see maxQMPLine).
	var top string
	err := m.execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/" + id, "property": "drive"}, &top)
	if err != nil {
		var qe *QMPError
		if errors.As(err, &qe) && qe.Class == "DeviceNotFound" {
			return nil, ErrDiskNotFound.with(nil, "vm has no disk %q", id)
		}
		return nil, err
	}
	if top == "" {
		return nil, ErrDiskNotFound.with(nil, "disk %q has no medium", id)
	}
	var graph struct {
		Nodes []struct {
			ID   uint64 `json:"id"`
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"nodes"`
		Edges []struct {
			Parent uint64 `json:"parent"`
			Child  uint64 `json:"child"`
			Name   string `json:"name"`
		} `json:"edges"`
	}
	if err := m.execute(ctx, "x-debug-query-block-graph", nil, &graph); err != nil {
		return nil, err
	}
	byName := map[string]uint64{}
	names := map[uint64]string{}
	for _, n := range graph.Nodes {
		if n.Type == "block-driver" {
			byName[n.Name], names[n.ID] = n.ID, n.Name
		}
	}
	child := func(parent uint64, edge string) (string, bool) {
		for _, e := range graph.Edges {
			if e.Parent == parent && e.Name == edge {
				return names[e.Child], true
			}
		}
		return "", false
	}
	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		return nil, err
	}
	info := map[string]BlockNode{}
	for _, n := range nodes {
		info[n.Node] = n
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
	var out []ChainLayer
	for node, ok := top, true; ok && node != "" && len(out) < 256; {
		n := info[node]
		l := ChainLayer{Node: node, FDSet: -1, Format: n.Driver, VirtualSize: n.Image.VirtualSize, ReadOnly: n.ReadOnly}
		if f, ok := child(byName[node], "file"); ok {
			l.FileNode = f
			l.FDSet = fdsetOf(info[f].File)
			l.Path = info[f].File
			if p := paths[l.FDSet]; p != "" {
				l.Path = p
			}
		}
		out = append(out, l)
		node, ok = child(byName[node], "backing")
	}
	return out, nil
}

// isNoSpace says whether QEMU's error text is ENOSPC's.
func isNoSpace(err error) bool {
	var ns *noSpaceError
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.As(err, &ns) {
		return true
	}
	var qe *QMPError
	return errors.As(err, &qe) && (strings.Contains(qe.Desc, "No space left on device") ||
		strings.Contains(qe.Desc, "Disk quota exceeded"))
}

// ResizeDisk grows disk id's virtual size to size bytes, live: the active
// image grows, and the guest's virtio-blk driver sees the new capacity at
// once (it logs "new size"; a filesystem needs its own resize).
//
// Errors: ErrInvalidDisk (size not a positive multiple of 512),
// ErrShrink (below the current size: never done, data would be lost),
// ErrDiskNotFound, ErrInsufficientStorage, or QEMU's. The same size is
// not an error: a retried resize succeeds.
func (m *Monitor) ResizeDisk(ctx context.Context, id string, size int64) error {
	if size <= 0 || size%512 != 0 {
		return ErrInvalidDisk.with(nil, "disk %s: size %d: want a positive multiple of 512", id, size)
	}
	chain, err := m.Chain(ctx, id)
	if err != nil {
		return err
	}
	cur := chain[0].VirtualSize
	switch {
	case size < cur:
		return ErrShrink.with(nil, "disk %s is %d bytes: it cannot shrink to %d", id, cur, size)
	case size == cur:
		return nil
	}
	if err := m.BlockResize(ctx, chain[0].Node, size); err != nil {
		if isNoSpace(err) {
			return ErrInsufficientStorage.with(err, "disk %s: no space to grow it", id)
		}
		return fmt.Errorf("qemu: resize disk %s: %w", id, err)
	}
	return nil
}
