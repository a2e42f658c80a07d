package images

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/otherix/otherix/test/guest"
)

// BenchmarkNormalise times what a download now costs after its last byte:
// the header check, qemu-img info, check and measure, the conversion into a
// standalone qcow2 and the checks of the result (normalise), against a bare
// qemu-img convert of the same file (convert). Images: the 13 MiB test
// guest (a compressed qcow2, 41 MiB virtual) and a 1 GiB qcow2 holding
// 256 MiB of random data in four extents.
func BenchmarkNormalise(b *testing.B) {
	if _, err := exec.LookPath(qemuImgBinary); err != nil {
		b.Skip("qemu-img not installed")
	}
	large := filepath.Join(b.TempDir(), "large.qcow2")
	raw := filepath.Join(b.TempDir(), "large.raw")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<20)
	for i := range 4 {
		rand.Read(chunk)
		if _, err := f.WriteAt(chunk, int64(i)*(256<<20)); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(1 << 30); err != nil {
		b.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(qemuImgBinary, "convert", "-f", "raw", "-O", "qcow2", raw, large).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	os.Remove(raw)
	for _, img := range []struct{ name, path string }{{"guest", guest.Image(b)}, {"1GiB", large}} {
		c, err := New("default", filepath.Join(b.TempDir(), "pool"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(img.name+"/normalise", func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				digest := digestOf([]byte{byte(i), byte(i >> 8)}) // a fresh base each time
				if err := c.normalise(context.Background(), img.path, digest); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.Remove(c.basePath(digest))
				b.StartTimer()
			}
		})
		b.Run(img.name+"/convert", func(b *testing.B) {
			out := filepath.Join(b.TempDir(), "out.qcow2")
			for b.Loop() {
				if o, err := exec.Command(qemuImgBinary, "convert", "-q", "-f", "qcow2", "-O", "qcow2", img.path, out).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, o)
				}
			}
		})
		c.Close()
	}
}
