package images

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// fakeClock is a settable clock for usage records.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time  { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) set(t time.Time) { f.mu.Lock(); f.t = t; f.mu.Unlock() }

// newCacheWithDisks opens a cache whose references are scanned in a disk
// directory it returns, with a fake clock.
func newCacheWithDisks(t *testing.T, opts Options) (*Cache, string, *fakeClock) {
	t.Helper()
	root := t.TempDir()
	disks := filepath.Join(root, "vms")
	os.MkdirAll(disks, 0o755)
	opts.DiskDirs = []string{disks}
	if opts.Allow == nil {
		opts.Allow = loopback
	}
	clk := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	opts.now = clk.now
	c, err := New("default", filepath.Join(root, "images"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, disks, clk
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestDeleteRefusedWhileAChainUsesTheBase(t *testing.T) {
	needQemuImg(t)
	srv, hits := serve(t, serveBytes(rawDisk(t, 1<<20)))
	c, disks, _ := newCacheWithDisks(t, Options{})
	img, err := ensure(t, c, srv.URL+"/disk.img", "")
	if err != nil {
		t.Fatal(err)
	}
	// A VM disk outside the scanned directory, and a snapshot overlay on
	// it inside: only the chain through the headers leads to the base.
	mid := filepath.Join(t.TempDir(), "vm.qcow2")
	if err := c.CreateVMDisk(context.Background(), img, mid, 4<<20); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(disks, "snapshot-of-something.bin") // a name that says nothing
	run(t, qemuImgBinary, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", mid, top, "4M")

	wantCode(t, c.Delete(context.Background(), img.SHA256), CodeInUse)
	inv, err := c.Inventory(context.Background())
	if err != nil || len(inv) != 1 || len(inv[0].Users) != 1 || inv[0].Users[0] != top || inv[0].Aliases[0] != "disk.img" {
		t.Fatalf("inventory %+v, %v: want disk.img used by %s", inv, err, top)
	}
	if !exists(img.Path) {
		t.Fatal("base removed although in use")
	}

	os.Remove(top)
	if err := c.Delete(context.Background(), img.SHA256); err != nil {
		t.Fatal(err)
	}
	if exists(img.Path) || exists(c.sourcePath(img.URL)) || exists(c.usagePath(img.SHA256)) {
		t.Error("base or its records left after delete")
	}
	wantCode(t, c.Delete(context.Background(), img.SHA256), CodeNotFound)
	wantCode(t, c.Delete(context.Background(), "../../etc/passwd"), CodeSHA256Invalid)
	// The next VM of that URL downloads it again.
	before := hits.Load()
	if _, err := ensure(t, c, srv.URL+"/disk.img", ""); err != nil {
		t.Fatal(err)
	}
	if hits.Load() == before {
		t.Error("a deleted image was served from the cache")
	}
}

// baseSize is the size the cache's conversion gives a 1 MiB random raw disk.
func baseSize(t *testing.T) int64 {
	src := filepath.Join(t.TempDir(), "s.raw")
	os.WriteFile(src, rawDisk(t, 1<<20), 0o644)
	dst := filepath.Join(t.TempDir(), "s.qcow2")
	run(t, qemuImgBinary, "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", src, dst)
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestEvictLeastRecentlyUsedUnusedBase(t *testing.T) {
	needQemuImg(t)
	size := baseSize(t)
	c, disks, clk := newCacheWithDisks(t, Options{MaxCacheBytes: size * 5 / 2, EvictGrace: time.Minute, EvictInterval: time.Hour})
	t0 := clk.now()
	imgs := map[string]Image{}
	get := func(name string, at time.Duration) {
		t.Helper()
		clk.set(t0.Add(at))
		srv, _ := serve(t, serveBytes(rawDisk(t, 1<<20)))
		img, err := ensure(t, c, srv.URL+"/"+name, "")
		if err != nil {
			t.Fatal(err)
		}
		imgs[name] = img
	}
	get("a.img", 0)
	// A VM is made from a: a is in use from now on, and the oldest.
	if err := c.CreateVMDisk(context.Background(), imgs["a.img"], filepath.Join(disks, "vm-a.qcow2"), 4<<20); err != nil {
		t.Fatal(err)
	}
	get("b.img", 10*time.Minute)
	get("c.img", 20*time.Minute)
	// Three bases exceed the limit: b, the least recently used unused one, goes.
	for name, want := range map[string]bool{"a.img": true, "b.img": false, "c.img": true} {
		if exists(imgs[name].Path) != want {
			t.Errorf("after c: %s present = %v, want %v", name, !want, want)
		}
	}
	// A new use of c makes it younger than d's... d is fetched later still,
	// so c goes next; a stays while its disk does.
	get("d.img", 30*time.Minute)
	if !exists(imgs["a.img"].Path) || exists(imgs["c.img"].Path) || !exists(imgs["d.img"].Path) {
		t.Errorf("after d: want a (in use) and d kept, c evicted")
	}
	// Once the disk is gone, a is the oldest unused base.
	os.Remove(filepath.Join(disks, "vm-a.qcow2"))
	get("e.img", 40*time.Minute)
	if exists(imgs["a.img"].Path) || !exists(imgs["d.img"].Path) || !exists(imgs["e.img"].Path) {
		t.Errorf("after e: want a evicted, d and e kept")
	}
}

// TestEvictPeriodicPass: bases inside the grace period survive the pass
// after their download; the periodic pass evicts them once they are older.
func TestEvictPeriodicPass(t *testing.T) {
	needQemuImg(t)
	size := baseSize(t)
	c, _, clk := newCacheWithDisks(t, Options{MaxCacheBytes: size * 3 / 2, EvictGrace: time.Hour, EvictInterval: 20 * time.Millisecond})
	t0 := clk.now()
	var paths []string
	for i, name := range []string{"x.img", "y.img"} {
		clk.set(t0.Add(time.Duration(i) * time.Minute))
		srv, _ := serve(t, serveBytes(rawDisk(t, 1<<20)))
		img, err := ensure(t, c, srv.URL+"/"+name, "")
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, img.Path)
	}
	if !exists(paths[0]) || !exists(paths[1]) {
		t.Fatal("a base inside the grace period was evicted")
	}
	clk.set(t0.Add(2 * time.Hour))
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "the periodic pass evicts the oldest base", func() bool { return !exists(paths[0]) })
	if !exists(paths[1]) {
		t.Error("the pass evicted more than needed")
	}
}

func TestPullPolicyPerCall(t *testing.T) {
	needQemuImg(t)
	srv, hits := serve(t, serveBytes(rawDisk(t, 1<<20)))
	c := newCache(t, Options{})
	url := srv.URL + "/disk.img"
	ctx := context.Background()
	_, err := c.EnsureWith(ctx, url, "", PullNever, nil)
	wantCode(t, err, CodeNotPresent)
	if hits.Load() != 0 {
		t.Fatal("PullNever asked the origin")
	}
	img, err := c.EnsureWith(ctx, url, "", PullIfNotPresent, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := hits.Load()
	if got, err := c.EnsureWith(ctx, url, "", PullNever, nil); err != nil || got.SHA256 != img.SHA256 {
		t.Fatalf("PullNever on a cached image: %v", err)
	}
	// Never with another digest than the cached one is not present either.
	_, err = c.EnsureWith(ctx, url, digestOf([]byte("other")), PullNever, nil)
	wantCode(t, err, CodeNotPresent)
	if _, err := c.EnsureWith(ctx, url, "", PullIfNotPresent, nil); err != nil || hits.Load() != n {
		t.Fatalf("IfNotPresent asked the origin again (%v)", err)
	}
	if _, err := c.EnsureWith(ctx, url, "", PullAlways, nil); err != nil || hits.Load() != n+1 {
		t.Fatalf("Always did not revalidate (%v, %d requests)", err, hits.Load()-n)
	}
	_, err = c.EnsureWith(ctx, url, "", "sometimes", nil)
	wantCode(t, err, CodePullPolicyInvalid)
}

// TestDiskFullDuringDownload fills a small tmpfs with a download whose size
// the origin does not announce: the write fails with ENOSPC, the partial
// file is removed and the error is insufficient_storage.
func TestDiskFullDuringDownload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	needQemuImg(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "otherix-test", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	body := rawDisk(t, 8<<20)
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		// No Content-Length: the free-space forecast cannot refuse it.
		for off := 0; off < len(body); off += 64 << 10 {
			if _, err := w.Write(body[off : off+64<<10]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	c, err := New("default", filepath.Join(mnt, "images"), Options{Allow: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = ensure(t, c, srv.URL+"/big.img", "")
	wantCode(t, err, CodeInsufficientStorage)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(e.Err, syscall.ENOSPC) {
		t.Errorf("cause %v, want ENOSPC", err)
	}
	assertNothingCached(t, c)
	// The space is back for the next image.
	var st syscall.Statfs_t
	syscall.Statfs(mnt, &st)
	if free := int64(st.Bavail) * st.Bsize; free < 3<<20 {
		t.Errorf("%d bytes free after the failed download: the partial file was kept", free)
	}
}
