package images

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCachedEnsureSkipsQemuImg: once an image is described, a cached Ensure
// and List reuse the description without running qemu-img; replacing the
// file (a new inode, another size) describes it again.
func TestCachedEnsureSkipsQemuImg(t *testing.T) {
	needQemuImg(t)
	body := qcow2Image(t, "64M")
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})
	// A qemu-img that logs each call, then runs the real one.
	calls := filepath.Join(t.TempDir(), "calls")
	wrapper := filepath.Join(t.TempDir(), "qemu-img")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$1\" >> "+calls+"\nexec "+qemuImgBinary+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.qemuImg = wrapper
	count := func() int {
		b, _ := os.ReadFile(calls)
		return strings.Count(string(b), "info")
	}

	first, err := ensure(t, c, srv.URL+"/img.qcow2", "")
	if err != nil {
		t.Fatal(err)
	}
	n := count()
	for range 3 {
		img, err := ensure(t, c, srv.URL+"/img.qcow2", "")
		if err != nil {
			t.Fatal(err)
		}
		if img != first {
			t.Fatalf("cached Ensure = %+v, want %+v", img, first)
		}
	}
	if _, err := c.List(); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != n {
		t.Fatalf("qemu-img info ran %d more times for a cached image", got-n)
	}

	// Another file in the base's place: described anew.
	other := qcow2Image(t, "128M")
	tmp := filepath.Join(c.dir, dirTmp, "swap")
	if err := os.WriteFile(tmp, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, first.Path); err != nil {
		t.Fatal(err)
	}
	img, err := c.Ensure(context.Background(), srv.URL+"/img.qcow2", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.VirtualSize != 128<<20 || count() != n+1 {
		t.Fatalf("replaced image: virtual size %d, qemu-img info calls %d (want %d, %d)", img.VirtualSize, count()-n, 128<<20, 1)
	}
}

// BenchmarkCachedEnsure is a cached Ensure with the remembered description
// (memo) against describing the base again (rescan: qemu-img info).
func BenchmarkCachedEnsure(b *testing.B) {
	if _, err := exec.LookPath(qemuImgBinary); err != nil {
		b.Skip("qemu-img not installed")
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	if out, err := exec.Command(qemuImgBinary, "create", "-q", "-f", "qcow2", src, "1G").CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	body, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(serveBytes(body))
	defer srv.Close()
	c, err := New("default", filepath.Join(dir, "pool"), Options{Allow: loopback})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	img, err := c.Ensure(ctx, srv.URL+"/img.qcow2", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("memo", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Ensure(ctx, srv.URL+"/img.qcow2", "", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rescan", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.info(ctx, formatQCOW2, img.Path); err != nil {
				b.Fatal(err)
			}
		}
	})
}
