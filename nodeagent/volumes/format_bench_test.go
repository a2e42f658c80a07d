package volumes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkBtrfsFormat is the measurement behind the btrfs driver's choice
// of raw files in its subvolumes: guest-like writes of 4 KiB every 64 KiB
// (8,192 of them, O_DIRECT, by `qemu-img bench`) into a fresh 1 GiB image
// ("fresh") and into one just snapshotted ("after-snapshot", where btrfs
// copies on write), raw against qcow2. alloc-MiB is what the fresh image
// occupies after its writes.
func BenchmarkBtrfsFormat(b *testing.B) {
	kind := btrfsK
	kind.size = 6 << 30 // sparse; deleted snapshots free their space lazily
	mnt := mountFS(b, kind, 0)
	bench := func(b *testing.B, format, path string) {
		b.Helper()
		out, err := exec.Command("qemu-img", "bench", "-q", "-w", "-t", "none", "-f", format,
			"-c", "8192", "-s", "4096", "-S", "65536", path).CombinedOutput()
		if err != nil {
			b.Fatalf("qemu-img bench: %v: %s", err, out)
		}
	}
	for _, format := range []string{formatRaw, formatQCOW2} {
		sv := filepath.Join(mnt, format)
		if err := subvolCreate(sv); err != nil {
			b.Fatal(err)
		}
		disk := filepath.Join(sv, "disk")
		fresh := func(b *testing.B) {
			os.Remove(disk)
			run(b, "qemu-img", "create", "-q", "-f", format, disk, "1G")
		}
		b.Run(format+"/fresh", func(b *testing.B) {
			var alloc int64
			for b.Loop() {
				b.StopTimer()
				fresh(b)
				b.StartTimer()
				bench(b, format, disk)
				b.StopTimer()
				var st syscall.Stat_t
				if err := syscall.Stat(disk, &st); err != nil {
					b.Fatal(err)
				}
				alloc = st.Blocks * 512
				b.StartTimer()
			}
			b.ReportMetric(float64(alloc)/mib, "alloc-MiB")
		})
		b.Run(format+"/after-snapshot", func(b *testing.B) {
			n := 0
			for b.Loop() {
				b.StopTimer()
				fresh(b)
				bench(b, format, disk)
				n++
				snap := filepath.Join(mnt, fmt.Sprintf("%s-snap-%d", format, n))
				if err := subvolSnapshot(sv, snap, true); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				bench(b, format, disk)
				b.StopTimer()
				if err := subvolDelete(snap); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
