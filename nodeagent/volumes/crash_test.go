package volumes

import (
	"fmt"
	"slices"
	"testing"
)

// setCrash installs the crash seam on a driver.
func setCrash(d Driver, f func(point string) error) {
	switch d := d.(type) {
	case *dirDriver:
		d.crashAt = f
	case *btrfsDriver:
		d.crashAt = f
	}
}

// crashCase is one operation killed at each of its steps in turn.
type crashCase struct {
	name  string
	setup func(t *testing.T, d Driver, p string)
	op    func(d Driver, p string) error
	// check runs after a fresh driver's Recover: the operation must look
	// done or not done at all.
	check func(t *testing.T, d Driver, p string)
}

func crashCases(base string) []crashCase {
	vol := func(t *testing.T, d Driver, p string) {
		info, err := d.Create(bg, CreateOptions{Name: p + "-v", Size: 8 * mib})
		if err != nil {
			t.Fatal(err)
		}
		writePattern(t, info, 0x42, 0, mib)
	}
	volSnap := func(t *testing.T, d Driver, p string) {
		vol(t, d, p)
		if _, err := d.CreateSnapshot(bg, p+"-v", "s"); err != nil {
			t.Fatal(err)
		}
	}
	// whole: the volume is absent, or present, consistent, and reads b.
	whole := func(t *testing.T, d Driver, name string, b byte) bool {
		info, err := d.Stat(bg, name)
		if ErrorCode(err) == CodeNotFound {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, info)
		if !hasPattern(t, info.Format, info.Path, b, 0, mib) {
			t.Fatalf("%s exists but does not read as it should", name)
		}
		return true
	}
	snapState := func(t *testing.T, d Driver, p string) bool {
		snaps, err := d.ListSnapshots(bg, p+"-v")
		if ErrorCode(err) == CodeNotFound {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) == 0 {
			return false
		}
		if !hasPattern(t, snaps[0].Format, snaps[0].Path, 0x42, 0, mib) {
			t.Fatal("snapshot does not read as its volume")
		}
		return true
	}
	return []crashCase{
		{
			name: "create",
			op: func(d Driver, p string) error {
				_, err := d.Create(bg, CreateOptions{Name: p + "-v", Base: base})
				return err
			},
			check: func(t *testing.T, d Driver, p string) { whole(t, d, p+"-v", 0x5a) },
		},
		{
			name:  "clone-snapshot",
			setup: volSnap,
			op: func(d Driver, p string) error {
				_, err := d.Clone(bg, CloneOptions{Name: p + "-c", Source: p + "-v", Snapshot: "s", Size: 16 * mib})
				return err
			},
			check: func(t *testing.T, d Driver, p string) {
				made := whole(t, d, p+"-c", 0x42)
				if dd, ok := d.(*dirDriver); ok {
					// A ref exists exactly when the clone reads the snapshot.
					users := dd.users(p+"-v", "s")
					want := []string(nil)
					if made && !dd.reflink {
						want = []string{p + "-c"}
					}
					if !slices.Equal(users, want) {
						t.Fatalf("refs on the snapshot: %v, want %v", users, want)
					}
				}
			},
		},
		{
			name:  "clone-volume",
			setup: vol,
			op: func(d Driver, p string) error {
				_, err := d.Clone(bg, CloneOptions{Name: p + "-c", Source: p + "-v"})
				return err
			},
			check: func(t *testing.T, d Driver, p string) { whole(t, d, p+"-c", 0x42) },
		},
		{
			name:  "snapshot",
			setup: vol,
			op: func(d Driver, p string) error {
				_, err := d.CreateSnapshot(bg, p+"-v", "s")
				return err
			},
			check: func(t *testing.T, d Driver, p string) { snapState(t, d, p) },
		},
		{
			name:  "delete-snapshot",
			setup: volSnap,
			op:    func(d Driver, p string) error { return d.DeleteSnapshot(bg, p+"-v", "s") },
			check: func(t *testing.T, d Driver, p string) { snapState(t, d, p) },
		},
		{
			name:  "resize",
			setup: vol,
			op: func(d Driver, p string) error {
				_, err := d.Resize(bg, p+"-v", 24*mib)
				return err
			},
			check: func(t *testing.T, d Driver, p string) {
				whole(t, d, p+"-v", 0x42)
				info, _ := d.Stat(bg, p+"-v")
				if info.VirtualSize != 8*mib && info.VirtualSize != 24*mib {
					t.Fatalf("size %d after a torn resize", info.VirtualSize)
				}
				if _, ok := d.(*dirDriver); ok && info.VirtualSize != 24*mib {
					// Every dir step comes after the journal record,
					// so Recover must have finished the resize.
					t.Fatalf("recorded resize not finished: %d", info.VirtualSize)
				}
			},
		},
		{
			name:  "delete",
			setup: volSnap,
			op:    func(d Driver, p string) error { return d.Delete(bg, p+"-v") },
			check: func(t *testing.T, d Driver, p string) {
				present := whole(t, d, p+"-v", 0x42)
				if present != snapState(t, d, p) {
					t.Fatalf("volume present=%v but its snapshot is not", present)
				}
			},
		},
	}
}

// TestCrashRecovery kills each operation at each of its steps (the crash
// seam stops it there without any cleanup, as kill -9 would), starts a
// new driver on the same pool as a restarted agent would, runs Recover,
// and checks the operation appears complete or not at all, with no
// temporary file or journal record left.
func TestCrashRecovery(t *testing.T) {
	for _, e := range envs {
		t.Run(e.name, func(t *testing.T) {
			d, root := newDriver(t, e, "node-a")
			base := makeBase(t, t.TempDir(), 8*mib, 0x5a)
			n := 0
			for _, c := range crashCases(base) {
				// A dry run lists the steps this driver passes through.
				var points []string
				n++
				p := fmt.Sprintf("k%d", n)
				if c.setup != nil {
					c.setup(t, d, p)
				}
				setCrash(d, func(p string) error { points = append(points, p); return nil })
				if err := c.op(d, p); err != nil {
					t.Fatalf("%s dry run: %v", c.name, err)
				}
				setCrash(d, nil)
				for _, point := range points {
					t.Run(c.name+"/"+point, func(t *testing.T) {
						n++
						p := fmt.Sprintf("k%d", n)
						if c.setup != nil {
							c.setup(t, d, p)
						}
						setCrash(d, func(got string) error {
							if got == point {
								return fmt.Errorf("kill")
							}
							return nil
						})
						err := c.op(d, p)
						setCrash(d, nil)
						if !isCrash(err) {
							t.Fatalf("op returned %v, want the injected crash", err)
						}
						restarted := mustNew(t, e.driver, root, "node-a")
						if _, err := restarted.Recover(bg); err != nil {
							t.Fatalf("Recover: %v", err)
						}
						if l := leftovers(t, root); len(l) != 0 {
							t.Fatalf("left behind after Recover: %v", l)
						}
						c.check(t, restarted, p)
					})
				}
				if len(points) == 0 && e.driver == DriverDir {
					t.Errorf("%s: no crash points on %s", c.name, e.name)
				}
			}
		})
	}
}
