package qemu

import (
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// qemuImg runs qemu-img or fails the test.
func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newImage makes a qcow2 of size next to the VM's disk, owned so that the
// test's QEMU user could not open it by path: QEMU gets it by descriptor.
func newImage(t *testing.T, s Spec, name, size string, backing ...string) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(s.Disk), name)
	args := []string{"create", "-q", "-f", "qcow2"}
	if len(backing) > 0 {
		args = append(args, "-F", "qcow2", "-b", backing[0])
	}
	qemuImg(t, append(args, p, size)...)
	return p
}

// sandboxed is testSpec as the agent runs QEMU: another user, seccomp.
func sandboxed(t *testing.T) Spec {
	s := testSpec(t)
	s.Sandbox = true
	s.User = qemuUser(t)
	return s
}

// TestAttachDetachDisk: a disk with a backing image is hot-plugged into a
// sandboxed QEMU that cannot open either file by path, its chain reads
// back with the agent's paths, and a second disk of the same id is
// refused with nothing changed. With no guest running, nobody releases the
// device: detach times out with ErrHotplugTimeout and leaves the disk
// attached and its nodes in place.
func TestAttachDetachDisk(t *testing.T) {
	s := sandboxed(t)
	base := newImage(t, s, "base.qcow2", "32M")
	top := newImage(t, s, "data.qcow2", "32M", base)
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)

	d := Disk{ID: "data1", Serial: "vol-data1", Path: top, Backing: []Image{{Path: base, Format: "qcow2"}}}
	if err := m.AttachDisk(ctx, d); err != nil {
		t.Fatal(err)
	}
	chain, err := m.Chain(ctx, "data1")
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || chain[0].Node != "data1" || chain[0].Path != top || chain[0].ReadOnly ||
		chain[1].Node != "data1-b0" || chain[1].Path != base || !chain[1].ReadOnly {
		t.Fatalf("chain = %+v", chain)
	}
	if chain[0].VirtualSize != 32<<20 {
		t.Errorf("virtual size %d", chain[0].VirtualSize)
	}
	serial := qomGet(t, m, "/machine/peripheral/data1", "serial")
	if serial != `"vol-data1"` {
		t.Errorf("serial = %s", serial)
	}

	before := nodeNames(t, m)
	err = m.AttachDisk(ctx, d)
	if !errors.Is(err, ErrDiskExists) || Code(err) != "disk_exists" {
		t.Fatalf("second attach: %v, want disk_exists", err)
	}
	if after := nodeNames(t, m); after != before {
		t.Errorf("a refused attach changed the nodes: %s -> %s", before, after)
	}

	// A read-only disk: the guest sees it read-only, and it is not
	// snapshot.
	ro := newImage(t, s, "ro.qcow2", "16M")
	if err := m.AttachDisk(ctx, Disk{ID: "ro1", Serial: "ro", Path: ro, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if c, err := m.Chain(ctx, "ro1"); err != nil || !c[0].ReadOnly {
		t.Fatalf("read-only chain %+v %v", c, err)
	}
	_, err = m.Snapshot(ctx, []SnapshotDisk{{ID: "ro1", Seq: 1, Backing: ro, Overlay: ro + ".o"}})
	if !errors.Is(err, ErrInvalidDisk) {
		t.Errorf("snapshot of a read-only disk: %v, want invalid_disk", err)
	}
	before = nodeNames(t, m)

	err = m.DetachDisk(ctx, "data1", 500*time.Millisecond)
	if !errors.Is(err, ErrHotplugTimeout) || Code(err) != "hotplug_timeout" {
		t.Fatalf("detach without a guest: %v, want hotplug_timeout", err)
	}
	if ok, err := m.hasDevice(ctx, "data1"); err != nil || !ok {
		t.Fatalf("device gone after a timed-out detach: %v %v", ok, err)
	}
	if after := nodeNames(t, m); after != before {
		t.Errorf("a timed-out detach changed the nodes: %s -> %s", before, after)
	}
	// The pending request is waited for again, not refused.
	err = m.DetachDisk(ctx, "data1", 200*time.Millisecond)
	if !errors.Is(err, ErrHotplugTimeout) {
		t.Fatalf("second detach: %v, want hotplug_timeout", err)
	}
}

// TestAttachDiskInvalid: ids, serials and paths that would not make safe
// QEMU names are refused before anything is sent.
func TestAttachDiskInvalid(t *testing.T) {
	ok := Disk{ID: "data1", Serial: "s1", Path: "/var/lib/x.qcow2"}
	tests := []struct {
		name string
		edit func(*Disk)
	}{
		{"empty id", func(d *Disk) { d.ID = "" }},
		{"id with dash", func(d *Disk) { d.ID = "a-s1" }},
		{"id with comma", func(d *Disk) { d.ID = "a,drive=x" }},
		{"id starting with a digit", func(d *Disk) { d.ID = "1a" }},
		{"id too long", func(d *Disk) { d.ID = strings.Repeat("a", 17) }},
		{"id with slash", func(d *Disk) { d.ID = "../x" }},
		{"boot disk id", func(d *Disk) { d.ID = "disk0" }},
		{"seed id", func(d *Disk) { d.ID = "seed0" }},
		{"serial too long", func(d *Disk) { d.Serial = strings.Repeat("s", 21) }},
		{"serial with comma", func(d *Disk) { d.Serial = "a,b" }},
		{"empty serial", func(d *Disk) { d.Serial = "" }},
		{"relative path", func(d *Disk) { d.Path = "x.qcow2" }},
		{"backing without format", func(d *Disk) { d.Backing = []Image{{Path: "/b"}} }},
		{"raw backing with one below", func(d *Disk) { d.Backing = []Image{{Path: "/b", Format: "raw"}, {Path: "/c", Format: "qcow2"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ok
			tt.edit(&d)
			// A nil monitor: validation must fail before any command.
			err := (*Monitor)(nil).AttachDisk(ctxT(t), d)
			if !errors.Is(err, ErrInvalidDisk) {
				t.Fatalf("err = %v, want ErrInvalidDisk", err)
			}
		})
	}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid disk refused: %v", err)
	}
	for _, id := range []string{"disk0", "seed0", "base0", "", "a-b", "X1"} {
		if err := (*Monitor)(nil).DetachDisk(ctxT(t), id, time.Second); !errors.Is(err, ErrInvalidDisk) {
			t.Errorf("detach %q: %v, want invalid_disk", id, err)
		}
	}
}

func qomGet(t *testing.T, m *Monitor, path, prop string) string {
	t.Helper()
	ret, err := qmpRaw(ctxT(t), m, "qom-get", map[string]any{"path": path, "property": prop})
	if err != nil {
		t.Fatal(err)
	}
	return string(ret)
}

// nodeNames lists the named block nodes, sorted, as one string.
func nodeNames(t *testing.T, m *Monitor) string {
	t.Helper()
	nodes, err := m.QueryNamedBlockNodes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Node)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// TestResizeDisk: a disk with a snapshot overlay grows live, and QEMU's
// device reports the new size; shrinking and odd sizes are refused.
func TestResizeDisk(t *testing.T) {
	s := sandboxed(t)
	data := newImage(t, s, "data.qcow2", "32M")
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	if err := m.AttachDisk(ctx, Disk{ID: "data1", Serial: "d1", Path: data}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "data1", Seq: 1, Backing: data,
		Overlay: filepath.Join(filepath.Dir(data), "o.qcow2")}}); err != nil {
		t.Fatal(err)
	}
	if err := m.ResizeDisk(ctx, "data1", 48<<20); err != nil {
		t.Fatal(err)
	}
	chain, err := m.Chain(ctx, "data1")
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].VirtualSize != 48<<20 {
		t.Errorf("size after resize: %d", chain[0].VirtualSize)
	}
	if err := m.ResizeDisk(ctx, "data1", 48<<20); err != nil {
		t.Errorf("same size again: %v", err)
	}
	if err := m.ResizeDisk(ctx, "data1", 16<<20); !errors.Is(err, ErrShrink) || Code(err) != "volume_shrink_unsupported" {
		t.Errorf("shrink: %v, want volume_shrink_unsupported", err)
	}
	for _, bad := range []int64{0, -512, 48<<20 + 1} {
		if err := m.ResizeDisk(ctx, "data1", bad); !errors.Is(err, ErrInvalidDisk) {
			t.Errorf("size %d: %v, want invalid_disk", bad, err)
		}
	}
	if err := m.ResizeDisk(ctx, "nosuch", 64<<20); !errors.Is(err, ErrDiskNotFound) {
		t.Errorf("missing disk: %v, want disk_not_found", err)
	}
}
