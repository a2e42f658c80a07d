package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const mib = 1 << 20

// TestDriverLifecycle drives every operation of each driver on the
// filesystem it is made for, and checks the guest-visible content with
// qemu-io at each step.
func TestDriverLifecycle(t *testing.T) {
	for _, e := range envs {
		t.Run(e.name, func(t *testing.T) {
			d, root := newDriver(t, e, "node-a")
			base := makeBase(t, t.TempDir(), 32*mib, 0x5a)
			if dd, ok := d.(*dirDriver); ok && dd.Reflink() != (e.fs.name == "xfs") {
				t.Fatalf("reflink probe on %s said %v", e.fs.name, dd.Reflink())
			}

			// Create, empty and from a base.
			empty, err := d.Create(bg, CreateOptions{Name: "empty", Size: 64 * mib})
			if err != nil {
				t.Fatal(err)
			}
			if empty.VirtualSize != 64*mib || len(empty.Chain) != 0 {
				t.Fatalf("empty volume: %+v", empty)
			}
			checkImage(t, empty)
			_, err = d.Create(bg, CreateOptions{Name: "empty", Size: 64 * mib})
			wantCode(t, err, CodeExists)
			_, err = d.Create(bg, CreateOptions{Name: "small", Size: 16 * mib, Base: base})
			wantCode(t, err, CodeSizeInvalid)
			_, err = d.Create(bg, CreateOptions{Name: "odd", Size: 1000})
			wantCode(t, err, CodeSizeInvalid)
			_, err = d.Create(bg, CreateOptions{Name: "nobase", Base: filepath.Join(root, "missing")})
			wantCode(t, err, CodeBaseInvalid)

			vol, err := d.Create(bg, CreateOptions{Name: "vol", Base: base})
			if err != nil {
				t.Fatal(err)
			}
			if vol.VirtualSize != 32*mib {
				t.Fatalf("from base: virtual size %d, want the base's", vol.VirtualSize)
			}
			if e.driver == DriverDir && (len(vol.Chain) != 1 || vol.Chain[0].Path != base) {
				t.Fatalf("dir volume chain %+v, want the base", vol.Chain)
			}
			if !hasPattern(t, vol.Format, vol.Path, 0x5a, 0, mib) {
				t.Fatal("volume does not read as its base")
			}

			// Resize: grow only.
			if vol, err = d.Resize(bg, "vol", 48*mib); err != nil || vol.VirtualSize != 48*mib {
				t.Fatalf("grow: %+v %v", vol, err)
			}
			_, err = d.Resize(bg, "vol", 40*mib)
			wantCode(t, err, CodeShrinkUnsupported)
			_, err = d.Resize(bg, "nope", 40*mib)
			wantCode(t, err, CodeNotFound)
			checkImage(t, vol)

			// Snapshot, then change the volume.
			snap, err := d.CreateSnapshot(bg, "vol", "s1")
			if err != nil {
				t.Fatal(err)
			}
			if snap.VirtualSize != 48*mib || snap.Created.IsZero() {
				t.Fatalf("snapshot: %+v", snap)
			}
			_, err = d.CreateSnapshot(bg, "vol", "s1")
			wantCode(t, err, CodeSnapshotExists)
			writePattern(t, vol, 0x77, 0, mib)
			writePattern(t, vol, 0x33, 40*mib, mib)
			if !hasPattern(t, snap.Format, snap.Path, 0x5a, 0, mib) {
				t.Fatal("snapshot changed with its volume")
			}

			// Clones of the snapshot and of the volume.
			fromSnap, err := d.Clone(bg, CloneOptions{Name: "from-snap", Source: "vol", Snapshot: "s1", Size: 64 * mib})
			if err != nil {
				t.Fatal(err)
			}
			if fromSnap.VirtualSize != 64*mib || !hasPattern(t, fromSnap.Format, fromSnap.Path, 0x5a, 0, mib) {
				t.Fatalf("clone of snapshot: %+v", fromSnap)
			}
			checkImage(t, fromSnap)
			fromVol, err := d.Clone(bg, CloneOptions{Name: "from-vol", Source: "vol"})
			if err != nil {
				t.Fatal(err)
			}
			if !hasPattern(t, fromVol.Format, fromVol.Path, 0x77, 0, mib) || !hasPattern(t, fromVol.Format, fromVol.Path, 0x33, 40*mib, mib) {
				t.Fatal("clone of volume does not read as the volume")
			}
			_, err = d.Clone(bg, CloneOptions{Name: "x", Source: "vol", Snapshot: "nope"})
			wantCode(t, err, CodeSnapshotNotFound)
			_, err = d.Clone(bg, CloneOptions{Name: "x", Source: "vol", Size: 16 * mib})
			wantCode(t, err, CodeShrinkUnsupported)
			_, err = d.Clone(bg, CloneOptions{Name: "from-vol", Source: "vol"})
			wantCode(t, err, CodeExists)
			// Writing a clone leaves its source alone.
			writePattern(t, fromSnap, 0x11, 0, mib)
			if !hasPattern(t, snap.Format, snap.Path, 0x5a, 0, mib) || !hasPattern(t, vol.Format, vol.Path, 0x77, 0, mib) {
				t.Fatal("writing a clone changed its source")
			}

			overlay := e.fs.name == "ext4"
			if overlay {
				// No reflinks: the clone of s1 is an overlay on it, so s1
				// (and vol with it) stays while the clone lives.
				if len(fromSnap.Chain) == 0 || fromSnap.Chain[0].Path != snap.Path {
					t.Fatalf("ext4 clone chain %+v, want the snapshot first", fromSnap.Chain)
				}
				wantCode(t, d.DeleteSnapshot(bg, "vol", "s1"), CodeSnapshotInUse)
				wantCode(t, d.Delete(bg, "vol"), CodeSnapshotInUse)
				if err := d.Delete(bg, "from-snap"); err != nil {
					t.Fatal(err)
				}
			} else if e.driver == DriverDir {
				if len(fromSnap.Chain) != 1 || fromSnap.Chain[0].Path != base {
					t.Fatalf("reflink clone chain %+v, want only the base", fromSnap.Chain)
				}
			}
			snaps, err := d.ListSnapshots(bg, "vol")
			if err != nil || len(snaps) != 1 || snaps[0].Name != "s1" {
				t.Fatalf("ListSnapshots: %+v %v", snaps, err)
			}
			if err := d.DeleteSnapshot(bg, "vol", "s1"); err != nil {
				t.Fatal(err)
			}
			wantCode(t, d.DeleteSnapshot(bg, "vol", "s1"), CodeSnapshotNotFound)
			if !overlay && !hasPattern(t, fromSnap.Format, fromSnap.Path, 0x11, 0, mib) {
				t.Fatal("a clone lost its data with the snapshot it came from")
			}

			// List, Delete, Stat.
			pg, err := d.List(bg, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"empty", "from-snap", "from-vol", "vol"}
			if overlay {
				want = []string{"empty", "from-vol", "vol"}
			}
			if !slices.Equal(pg.Names, want) || pg.Next != "" {
				t.Fatalf("List = %+v, want %v", pg, want)
			}
			if _, err := d.CreateSnapshot(bg, "vol", "s2"); err != nil {
				t.Fatal(err)
			}
			if err := d.Delete(bg, "vol"); err != nil {
				t.Fatal(err)
			}
			_, err = d.Stat(bg, "vol")
			wantCode(t, err, CodeNotFound)
			_, err = d.ListSnapshots(bg, "vol")
			wantCode(t, err, CodeNotFound)
			wantCode(t, d.Delete(bg, "vol"), CodeNotFound)
			if _, err := os.Stat(filepath.Join(root, dirSnapshots, "vol")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("snapshots of a deleted volume are left: %v", err)
			}
			if !hasPattern(t, fromVol.Format, fromVol.Path, 0x77, 0, mib) {
				t.Fatal("deleting a volume changed its clone")
			}
			if l := leftovers(t, root); len(l) != 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
	}
}
