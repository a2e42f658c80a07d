package volumes

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func freeBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// TestDiskFullDir: on a tiny ext4 a clone and a snapshot of a volume
// holding more data than is free fail with CodeInsufficientStorage, leave
// no partial file, and give the space back.
func TestDiskFullDir(t *testing.T) {
	mnt := mountFS(t, ext4, 48*mib)
	root := filepath.Join(mnt, "pool")
	d := mustNew(t, DriverDir, root, "node-a")
	vol, err := d.Create(bg, CreateOptions{Name: "big", Size: 64 * mib})
	if err != nil {
		t.Fatal(err)
	}
	writePattern(t, vol, 0xab, 0, 28*mib)
	free := freeBytes(t, mnt)
	if free > 28*mib {
		t.Fatalf("test setup: %d bytes free, the copy would fit", free)
	}

	_, err = d.Clone(bg, CloneOptions{Name: "copy", Source: "big"})
	wantCode(t, err, CodeInsufficientStorage)
	_, err = d.CreateSnapshot(bg, "big", "s")
	wantCode(t, err, CodeInsufficientStorage)

	if _, err := d.Stat(bg, "copy"); ErrorCode(err) != CodeNotFound {
		t.Fatalf("failed clone is visible: %v", err)
	}
	if snaps, err := d.ListSnapshots(bg, "big"); err != nil || len(snaps) != 0 {
		t.Fatalf("failed snapshot is visible: %v %v", snaps, err)
	}
	if l := leftovers(t, root); len(l) != 0 {
		t.Fatalf("partial files left: %v", l)
	}
	if now := freeBytes(t, mnt); now < free-mib {
		t.Fatalf("space not given back: %d free before, %d after", free, now)
	}
	// The pool still works once the failed copies are gone.
	if _, err := d.Create(bg, CreateOptions{Name: "small", Size: mib}); err != nil {
		t.Fatal(err)
	}
}

// TestDiskFullBtrfs: a volume created from a base larger than the free
// space fails with CodeInsufficientStorage and leaves no subvolume.
func TestDiskFullBtrfs(t *testing.T) {
	mnt := mountFS(t, btrfsK, 128*mib)
	root := filepath.Join(mnt, "pool")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	d := mustNew(t, DriverBtrfs, root, "node-a")
	base := filepath.Join(t.TempDir(), "base.raw")
	data := make([]byte, 160*mib)
	for i := range data {
		data[i] = byte(i>>12) | 1 // no zero block: qemu-img copies all of it
	}
	if err := os.WriteFile(base, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if free := freeBytes(t, mnt); free > 160*mib {
		t.Fatalf("test setup: %d bytes free, the base would fit", free)
	}
	_, err := d.Create(bg, CreateOptions{Name: "vm", Base: base})
	wantCode(t, err, CodeInsufficientStorage)
	if _, err := d.Stat(bg, "vm"); ErrorCode(err) != CodeNotFound {
		t.Fatalf("failed volume is visible: %v", err)
	}
	if l := leftovers(t, root); len(l) != 0 {
		t.Fatalf("partial subvolumes left: %v", l)
	}
	if _, err := d.Create(bg, CreateOptions{Name: "small", Size: mib}); err != nil {
		t.Fatal(err)
	}
}
