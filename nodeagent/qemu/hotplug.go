package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Disk is a disk to hot-plug into a running VM.
type Disk struct {
	// ID names the device and its block nodes (names.go): 1-16 of
	// [a-z0-9], starting with a letter, unique in the VM.
	ID string
	// Serial is the virtio-blk serial the guest sees, which makes
	// /dev/disk/by-id/virtio-<Serial> stable: 1-20 of [A-Za-z0-9._-].
	Serial string
	// Path is the disk's top image, a qcow2 file the agent made.
	Path string
	// Backing is the chain below Path, nearest first, as the agent
	// recorded it: QEMU is told it and never follows the names in the
	// images' headers.
	Backing []Image
	// ReadOnly opens the top image read-only too, and the guest sees a
	// read-only disk.
	ReadOnly bool
}

// Image is one backing image of a Disk.
type Image struct {
	Path   string
	Format string // "qcow2" or "raw"
}

// HotplugPorts is how many empty PCIe root ports the argv gives a q35 VM
// for disks attached while it runs (argv.go). A PCIe device can only be
// hot-plugged into a root port (q35's root bus takes none), and ports
// cannot be added to a running machine, so they are made at start.
const HotplugPorts = 8

// hotplugPort names the i-th root port.
func hotplugPort(i int) string { return fmt.Sprintf("hp%d", i) }

// DefaultUnplugTimeout is how long DetachDisk waits for the guest to
// release a disk when ctx allows longer. A guest with ACPI or PCIe
// hot-plug support releases it in under a second when idle (pciehp's
// attention button adds 5 s); under TCG, several.
const DefaultUnplugTimeout = 30 * time.Second

// reservedDisk says whether id names what the argv gives every VM.
func reservedDisk(id string) bool { return id == "disk0" || id == "base0" || id == "seed0" }

func (d Disk) validate() error {
	if err := checkDiskID(d.ID); err != nil {
		return err
	}
	if reservedDisk(d.ID) {
		return ErrInvalidDisk.with(nil, "disk id %s is reserved for the VM as started", d.ID)
	}
	if err := checkSerial(d.Serial); err != nil {
		return err
	}
	if d.Path == "" || !filepath.IsAbs(d.Path) || strings.ContainsRune(d.Path, 0) {
		return ErrInvalidDisk.with(nil, "disk %s: path %q: want an absolute path", d.ID, d.Path)
	}
	for i, b := range d.Backing {
		if b.Path == "" || !filepath.IsAbs(b.Path) || strings.ContainsRune(b.Path, 0) {
			return ErrInvalidDisk.with(nil, "disk %s: backing %d: path %q: want an absolute path", d.ID, i, b.Path)
		}
		if b.Format != "qcow2" && b.Format != "raw" {
			return ErrInvalidDisk.with(nil, "disk %s: backing %d: format %q: want qcow2 or raw", d.ID, i, b.Format)
		}
		if b.Format == "raw" && i != len(d.Backing)-1 {
			return ErrInvalidDisk.with(nil, "disk %s: backing %d: a raw image has no backing of its own", d.ID, i)
		}
	}
	return nil
}

// revert is a stack of undo steps for a multi-step change to a live VM.
type revert []func(context.Context)

func (r *revert) push(f func(context.Context)) { *r = append(*r, f) }

// run undoes in reverse order, on a ctx of its own: the caller's may be
// what ended the change.
func (r revert) run() {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	for i := len(r) - 1; i >= 0; i-- {
		r[i](ctx)
	}
}

// addImage opens path (read-write unless ro), hands it to QEMU in a new
// fdset and adds its file and format nodes, node over backing (no backing
// when backing is ""). Undo steps go on rv.
func (m *Monitor) addImage(ctx context.Context, rv *revert, node, path, format, backing string, ro bool) error {
	flag := os.O_RDWR
	if ro {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return fmt.Errorf("qemu: open %s: %w", path, err)
	}
	info, err := m.AddFD(ctx, f, NewFDSet, path)
	f.Close()
	if err != nil {
		return err
	}
	rv.push(func(c context.Context) { _ = m.RemoveFDSet(c, info.FDSet) })
	file := map[string]any{"driver": "file", "node-name": FileNode(node),
		"filename": fmt.Sprintf("/dev/fdset/%d", info.FDSet), "read-only": ro,
		"cache": map[string]any{"direct": true}}
	if !ro {
		file["discard"] = "unmap"
	}
	if err := m.BlockdevAdd(ctx, file); err != nil {
		return err
	}
	rv.push(func(c context.Context) { _ = m.BlockdevDel(c, FileNode(node)) })
	var back any // JSON null: no backing, whatever the header names
	if backing != "" {
		back = backing
	}
	fmtNode := map[string]any{"driver": format, "node-name": node, "file": FileNode(node), "read-only": ro}
	if format == "qcow2" {
		fmtNode["backing"] = back
		if !ro {
			fmtNode["discard"] = "unmap"
		}
	}
	if err := m.BlockdevAdd(ctx, fmtNode); err != nil {
		return err
	}
	rv.push(func(c context.Context) { _ = m.BlockdevDel(c, node) })
	return nil
}

// AttachDisk hot-plugs d into the running VM: its images as block nodes
// (bottom first), then a virtio-blk-pci device in a free hot-plug port.
// On any error what was added is removed again, and the VM is as before.
// The guest sees the disk appear when its kernel handles the hot-plug
// (virtio_blk and PCIe or ACPI PCI hot-plug); QEMU does not wait for it.
//
// Errors: ErrInvalidDisk, ErrDiskExists, ErrNoHotplugSlot, or QEMU's.
func (m *Monitor) AttachDisk(ctx context.Context, d Disk) (err error) {
	if err := d.validate(); err != nil {
		return err
	}
	if ok, err := m.hasDevice(ctx, d.ID); err != nil {
		return err
	} else if ok {
		return ErrDiskExists.with(nil, "vm already has a device %q", d.ID)
	}
	port, err := m.freePort(ctx)
	if err != nil {
		return err
	}
	var rv revert
	defer func() {
		if err != nil {
			rv.run()
		}
	}()
	below := ""
	for i := len(d.Backing) - 1; i >= 0; i-- {
		b := d.Backing[i]
		node := BackingNode(d.ID, i)
		if err := m.addImage(ctx, &rv, node, b.Path, b.Format, below, true); err != nil {
			if existsErr(err) {
				// Nodes of an attach interrupted before its device
				// (DropOrphans removes them).
				return ErrDiskExists.with(err, "vm already has block nodes of disk %q", d.ID)
			}
			return fmt.Errorf("qemu: attach disk %s: %w", d.ID, err)
		}
		below = node
	}
	if err := m.addImage(ctx, &rv, TopNode(d.ID), d.Path, "qcow2", below, d.ReadOnly); err != nil {
		if existsErr(err) {
			return ErrDiskExists.with(err, "vm already has block nodes of disk %q", d.ID)
		}
		return fmt.Errorf("qemu: attach disk %s: %w", d.ID, err)
	}
	// werror/rerror as for the boot disk (diskErrorPolicy).
	dev := map[string]any{"driver": "virtio-blk-pci", "id": d.ID, "drive": TopNode(d.ID),
		"serial": d.Serial, "bus": port, "werror": "enospc", "rerror": "report"}
	if err := m.DeviceAdd(ctx, dev); err != nil {
		return fmt.Errorf("qemu: attach disk %s: %w", d.ID, err)
	}
	return nil
}

func existsErr(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && strings.Contains(qe.Desc, "Duplicate")
}

// hasDevice says whether the VM has a device of id (/machine/peripheral/id).
func (m *Monitor) hasDevice(ctx context.Context, id string) (bool, error) {
	var props []struct {
		Name string `json:"name"`
	}
	if err := m.execute(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &props); err != nil {
		return false, err
	}
	for _, p := range props {
		if p.Name == id {
			return true, nil
		}
	}
	return false, nil
}

// freePort returns the first hot-plug root port with no device behind it.
func (m *Monitor) freePort(ctx context.Context) (string, error) {
	type dev struct {
		QDevID string `json:"qdev_id"`
		Bridge *struct {
			Devices []json.RawMessage `json:"devices"`
		} `json:"pci_bridge"`
	}
	var buses []struct {
		Devices []dev `json:"devices"`
	}
	if err := m.execute(ctx, "query-pci", nil, &buses); err != nil {
		return "", err
	}
	used := map[string]bool{}
	ports := map[string]bool{}
	for _, b := range buses {
		for _, d := range b.Devices {
			if d.Bridge != nil && strings.HasPrefix(d.QDevID, "hp") {
				ports[d.QDevID] = true
				used[d.QDevID] = len(d.Bridge.Devices) > 0
			}
		}
	}
	for i := 0; i < HotplugPorts; i++ {
		if p := hotplugPort(i); ports[p] && !used[p] {
			return p, nil
		}
	}
	if len(ports) == 0 {
		return "", ErrNoHotplugSlot.with(nil, "the vm has no hot-plug ports (started by an older agent: restart it)")
	}
	return "", ErrNoHotplugSlot.with(nil, "all %d hot-plug ports of the vm hold a disk", len(ports))
}

// DetachDisk hot-unplugs disk id: device_del, then it waits for QEMU's
// DEVICE_DELETED (the guest released the device) for timeout at most
// (DefaultUnplugTimeout if 0), then removes the disk's block nodes and
// closes QEMU's descriptors of its images. The caller may delete the files
// once it returns nil.
//
// A guest that ignores the unplug leaves the disk attached and usable:
// ErrHotplugTimeout, nothing removed. The request stays pending in QEMU
// (it cannot be withdrawn); calling DetachDisk again waits for it anew, and
// finishes the job if the guest has released the disk since.
//
// Errors: ErrInvalidDisk, ErrDiskNotFound, ErrHotplugTimeout, or QEMU's.
func (m *Monitor) DetachDisk(ctx context.Context, id string, timeout time.Duration) error {
	if err := checkDiskID(id); err != nil {
		return err
	}
	if reservedDisk(id) {
		return ErrInvalidDisk.with(nil, "%s is part of the VM as started (boot disk, its base, the seed): it cannot be detached", id)
	}
	if timeout <= 0 {
		timeout = DefaultUnplugTimeout
	}
	// The chain is read before the device goes: the nodes stay, but
	// query-block no longer lists them once nothing uses them.
	chain, cerr := m.Chain(ctx, id)
	present, err := m.hasDevice(ctx, id)
	if err != nil {
		return err
	}
	if present {
		if err := m.unplug(ctx, id, timeout); err != nil {
			return err
		}
	}
	nodes, err := m.diskNodes(ctx, id, chain, cerr == nil)
	if err != nil {
		return err
	}
	if !present && len(nodes) == 0 {
		return ErrDiskNotFound.with(nil, "vm has no disk %q", id)
	}
	return m.removeNodes(ctx, nodes)
}

// unplug sends device_del and waits for the device's DEVICE_DELETED.
func (m *Monitor) unplug(ctx context.Context, id string, timeout time.Duration) error {
	// Subscribed first: the event can come before device_del's reply,
	// and waits in the subscription's queue until read below.
	events, unsub := m.subscribe()
	defer unsub()
	if err := m.DeviceDel(ctx, id); err != nil {
		var qe *QMPError
		// A second DetachDisk after a timeout: QEMU refuses a new request
		// while one is pending, which is the one to wait for.
		if !errors.As(err, &qe) || !strings.Contains(qe.Desc, "in the process of unplug") {
			return fmt.Errorf("qemu: detach disk %s: %w", id, err)
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				// The connection ended (QEMU exited, or the monitor was
				// closed): whether the guest released the disk is unknown.
				return fmt.Errorf("qemu: detach disk %s: %w", id, ErrMonitorClosed)
			}
			if dev, _ := ev.Data["device"].(string); ev.Name == "DEVICE_DELETED" && dev == id {
				return nil
			}
		case <-t.C:
			// The event may have raced the timer.
			if ok, err := m.hasDevice(ctx, id); err == nil && !ok {
				return nil
			}
			return ErrHotplugTimeout.with(nil, "disk %s: the guest did not release it within %s (no ACPI/PCIe hot-unplug in the guest?); it is still attached", id, timeout)
		case <-ctx.Done():
			return fmt.Errorf("qemu: detach disk %s: %w", id, ctx.Err())
		}
	}
}

// diskNodes lists the block nodes of disk id, top first, each format node
// before its file node: the order blockdev-del needs. chain is the live
// chain read before the device went (if ok); nodes of ours not in it
// (left by a crash between steps) follow.
func (m *Monitor) diskNodes(ctx context.Context, id string, chain []ChainLayer, ok bool) ([]blockNodeRef, error) {
	var out []blockNodeRef
	seen := map[string]bool{}
	if ok {
		for _, l := range chain {
			if l.Node == "" || DiskOfNode(l.Node) != id {
				continue // not ours to delete (another disk's, or base0)
			}
			out = append(out, blockNodeRef{node: l.Node, fdset: -1}, blockNodeRef{node: l.FileNode, fdset: l.FDSet})
			seen[l.Node], seen[l.FileNode] = true, true
		}
	}
	all, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range all {
		if seen[n.Node] || DiskOfNode(n.Node) != id {
			continue
		}
		r := blockNodeRef{node: n.Node, fdset: -1}
		if n.Driver == "file" {
			r.fdset = fdsetOf(n.File)
		}
		out = append(out, r)
		seen[n.Node] = true
	}
	// Format nodes before file nodes, so each is unused when deleted.
	var fmts, files []blockNodeRef
	for _, r := range out {
		if strings.HasSuffix(r.node, "-file") {
			files = append(files, r)
		} else {
			fmts = append(fmts, r)
		}
	}
	return append(fmts, files...), nil
}

type blockNodeRef struct {
	node  string
	fdset int // of a file node, to close after it; -1 for none
}

// removeNodes deletes nodes in order and then their fdsets. A node another
// deleted node held is deleted by QEMU with it; that is not an error.
func (m *Monitor) removeNodes(ctx context.Context, nodes []blockNodeRef) error {
	for _, r := range nodes {
		if r.node == "" {
			continue
		}
		if err := m.BlockdevDel(ctx, r.node); err != nil && !notFoundErr(err) {
			return fmt.Errorf("qemu: remove block node %s: %w", r.node, err)
		}
	}
	for _, r := range nodes {
		if r.fdset >= 0 {
			if err := m.RemoveFDSet(ctx, r.fdset); err != nil && !notFoundErr(err) {
				return fmt.Errorf("qemu: close fdset %d: %w", r.fdset, err)
			}
		}
	}
	return nil
}

func notFoundErr(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && (strings.Contains(qe.Desc, "Failed to find node") ||
		strings.Contains(qe.Desc, "Cannot find") || strings.Contains(qe.Desc, "not found"))
}
