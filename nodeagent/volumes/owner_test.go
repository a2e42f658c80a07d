package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestSharedPoolOwner: two agents ("node-a", "node-b") share one pool
// directory, as on a --shared pool. A volume one of them opened is
// refused to the other until the control plane hands the other a higher
// epoch; then the first is fenced off.
func TestSharedPoolOwner(t *testing.T) {
	for _, driver := range []string{DriverDir, DriverBtrfs} {
		t.Run(driver, func(t *testing.T) {
			var root string
			if driver == DriverBtrfs {
				root = filepath.Join(mountFS(t, btrfsK, 0), "shared")
				if err := os.Mkdir(root, 0o700); err != nil {
					t.Fatal(err)
				}
			} else {
				root = filepath.Join(t.TempDir(), "shared")
			}
			a := mustNew(t, driver, root, "node-a")
			b := mustNew(t, driver, root, "node-b")
			if _, err := a.Create(bg, CreateOptions{Name: "v", Size: mib}); err != nil {
				t.Fatal(err)
			}
			info, err := a.Open(bg, "v", 1)
			if err != nil || info.Owner == nil || info.Owner.Node != "node-a" || info.Owner.Epoch != 1 {
				t.Fatalf("a opens: %+v %v", info, err)
			}
			if _, err := a.Open(bg, "v", 1); err != nil {
				t.Fatalf("a reopens at its epoch: %v", err)
			}

			// b is refused everything that writes.
			_, err = b.Open(bg, "v", 1)
			wantCode(t, err, CodeOwnedByOtherNode)
			_, err = b.Resize(bg, "v", 2*mib)
			wantCode(t, err, CodeOwnedByOtherNode)
			wantCode(t, b.Delete(bg, "v"), CodeOwnedByOtherNode)
			_, err = b.CreateSnapshot(bg, "v", "s")
			wantCode(t, err, CodeOwnedByOtherNode)
			_, err = b.Clone(bg, CloneOptions{Name: "c", Source: "v"})
			wantCode(t, err, CodeOwnedByOtherNode)
			// Reading is fine, and Release by a non-owner changes nothing.
			if st, err := b.Stat(bg, "v"); err != nil || st.Owner.Node != "node-a" {
				t.Fatalf("b stats: %+v %v", st, err)
			}
			if err := b.Release(bg, "v"); err != nil {
				t.Fatal(err)
			}
			_, err = b.Open(bg, "v", 1)
			wantCode(t, err, CodeOwnedByOtherNode)

			// The control plane moves the volume to b with epoch 2.
			if info, err := b.Open(bg, "v", 2); err != nil || info.Owner.Node != "node-b" {
				t.Fatalf("b takes over at epoch 2: %+v %v", info, err)
			}
			if _, err := b.Resize(bg, "v", 2*mib); err != nil {
				t.Fatal(err)
			}
			_, err = a.Open(bg, "v", 1)
			wantCode(t, err, CodeOwnedByOtherNode)
			_, err = a.Resize(bg, "v", 4*mib)
			wantCode(t, err, CodeOwnedByOtherNode)
			_, err = b.Open(bg, "v", 1)
			wantCode(t, err, CodeOwnedByOtherNode) // a stale epoch, even for the owner

			// Released, it may be opened by a again.
			if err := b.Release(bg, "v"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Open(bg, "v", 3); err != nil {
				t.Fatal(err)
			}
			if err := a.Delete(bg, "v"); err != nil {
				t.Fatal(err)
			}
			if o, err := a.(interface{ readOwner(string) (*Owner, error) }).readOwner("v"); err != nil || o != nil {
				t.Fatalf("marker after delete: %+v %v", o, err)
			}
		})
	}
}

// TestOpenRace: both nodes open the same fresh volumes at the same epoch at
// once; for each volume exactly one wins.
func TestOpenRace(t *testing.T) {
	root := filepath.Join(t.TempDir(), "shared")
	nodes := []Driver{mustNew(t, DriverDir, root, "node-a"), mustNew(t, DriverDir, root, "node-b")}
	const n = 20
	for i := range n {
		if _, err := nodes[0].Create(bg, CreateOptions{Name: fmt.Sprintf("v%d", i), Size: mib}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		name := fmt.Sprintf("v%d", i)
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for j, d := range nodes {
			wg.Go(func() { _, errs[j] = d.Open(bg, name, 1) })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			} else if ErrorCode(err) != CodeOwnedByOtherNode {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if won != 1 {
			t.Fatalf("%s: %d nodes own it (%v)", name, won, errs)
		}
	}
}

// TestRecoverLeavesOtherNodesAlone: on a shared pool, a node's Recover
// removes its own temporary files only.
func TestRecoverLeavesOtherNodesAlone(t *testing.T) {
	root := filepath.Join(t.TempDir(), "shared")
	a := mustNew(t, DriverDir, root, "node-a")
	b := mustNew(t, DriverDir, root, "node-b")
	theirs := filepath.Join(root, dirVolumes, ".tmp-node-a-v-1")
	mine := filepath.Join(root, dirVolumes, ".tmp-node-b-v-2")
	for _, p := range []string{theirs, mine} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := b.Recover(bg)
	if err != nil || rep.TempsRemoved != 1 {
		t.Fatalf("Recover: %+v %v", rep, err)
	}
	if _, err := os.Stat(theirs); err != nil {
		t.Fatalf("node-b removed node-a's file: %v", err)
	}
	if _, err := os.Stat(mine); !os.IsNotExist(err) {
		t.Fatalf("node-b kept its own temp: %v", err)
	}
	_ = a
}
