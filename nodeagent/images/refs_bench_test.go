package images

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkReferenceScan times the scan that guards Delete and eviction:
// the qcow2 headers of every disk in the pool's disk directory, each
// chain followed to its base. 1,000 VM disks on one base plus 1,000 seed
// files that are not qcow2 (as a pool holds them).
func BenchmarkReferenceScan(b *testing.B) {
	needQemuImgB(b)
	root := b.TempDir()
	disks := filepath.Join(root, "vms")
	os.MkdirAll(disks, 0o755)
	c, err := New("default", filepath.Join(root, "images"), Options{DiskDirs: []string{disks}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	src := filepath.Join(b.TempDir(), "src.raw")
	raw := make([]byte, 1<<20)
	raw[510], raw[511] = 0x55, 0xAA
	os.WriteFile(src, raw, 0o644)
	digest := digestOf(raw)
	if err := c.normalise(context.Background(), src, digest); err != nil {
		b.Fatal(err)
	}
	img, err := c.describe(context.Background(), digest)
	if err != nil {
		b.Fatal(err)
	}
	first := filepath.Join(disks, "vm-0.qcow2")
	if err := c.CreateVMDisk(context.Background(), img, first, 1<<30); err != nil {
		b.Fatal(err)
	}
	disk, _ := os.ReadFile(first)
	const n = 1000
	for i := 1; i < n; i++ {
		os.WriteFile(filepath.Join(disks, "vm-"+strconv.Itoa(i)+".qcow2"), disk, 0o644)
	}
	for i := 0; i < n; i++ {
		os.WriteFile(filepath.Join(disks, "vm-"+strconv.Itoa(i)+"-seed.iso"), make([]byte, 64<<10), 0o644)
	}
	b.ResetTimer()
	for range b.N {
		refs, err := c.references()
		if err != nil || len(refs[digest]) != n {
			b.Fatalf("%d users, %v", len(refs[digest]), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/n, "µs/disk")
}

func needQemuImgB(b *testing.B) {
	if _, err := os.Stat("/usr/bin/qemu-img"); err != nil {
		b.Skip("qemu-img not installed")
	}
}
