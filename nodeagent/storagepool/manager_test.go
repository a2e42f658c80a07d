package storagepool

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/messages"
)

const cluster = "c0ffee00c0ffee00c0ffee00c0ffee00"

func newManager(t *testing.T, defaultDir string) *Manager {
	t.Helper()
	m := New(Config{Cluster: cluster, DefaultDir: defaultDir, Log: slog.New(slog.DiscardHandler), ProbeTimeout: 10 * time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Wait(ctx)
	})
	return m
}

func pool(name, path, driver string) messages.DesiredPool {
	return messages.DesiredPool{ID: messages.NewID(), Name: name, Driver: driver, Path: path}
}

func reportOf(t *testing.T, m *Manager, name string) messages.PoolStatus {
	t.Helper()
	for _, r := range m.Report(t.Context()) {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("pool %s not reported", name)
	return messages.PoolStatus{}
}

// TestDirPoolCreatedAndMarked: a missing directory is made 0700 and
// marked with the cluster and pool; the report has real figures.
func TestDirPoolCreatedAndMarked(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, filepath.Join(root, "default"))
	p := pool("fast", filepath.Join(root, "srv", "fast"), messages.PoolDriverDir)
	m.SetDesired([]messages.DesiredPool{p})
	r := reportOf(t, m, "fast")
	if r.Health != messages.PoolHealthOK || r.TotalBytes <= 0 || r.FreeBytes <= 0 || r.UsedBytes <= 0 ||
		r.ID != p.ID || r.Driver != "dir" || r.Path != p.Path {
		t.Fatalf("report %+v", r)
	}
	fi, err := os.Stat(p.Path)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v %v", fi.Mode(), err)
	}
	mk, ok, err := readMarker(p.Path)
	if err != nil || !ok || mk != (Marker{Cluster: cluster, PoolID: p.ID, Pool: "fast"}) {
		t.Fatalf("marker %+v %v %v", mk, ok, err)
	}
	// Files appear in the pool (volumes); it stays ours.
	if err := os.WriteFile(filepath.Join(p.Path, "vol.qcow2"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, filepath.Join(root, "default"))
	m2.SetDesired([]messages.DesiredPool{p})
	if r := reportOf(t, m2, "fast"); r.Health != messages.PoolHealthOK {
		t.Fatalf("a restarted agent refuses its own pool: %+v", r)
	}
}

// TestRefusals: another pool's or cluster's marker, a non-empty unmarked
// directory, a file where the directory should be, and a path that fails
// validation are each reported as health error with a message, and
// nothing of the path is changed.
func TestRefusals(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, filepath.Join(root, "default"))
	owned := filepath.Join(root, "owned")
	first := pool("first", owned, messages.PoolDriverDir)
	m.SetDesired([]messages.DesiredPool{first})
	if r := reportOf(t, m, "first"); r.Health != messages.PoolHealthOK {
		t.Fatal(r)
	}

	foreignCluster := filepath.Join(root, "theirs")
	if err := os.Mkdir(foreignCluster, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeMarker(foreignCluster, Marker{Cluster: "another-cluster-fp", PoolID: messages.NewID(), Pool: "x"}); err != nil {
		t.Fatal(err)
	}
	busy := filepath.Join(root, "busy")
	if err := os.MkdirAll(filepath.Join(busy, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		p    messages.DesiredPool
		want string
	}{
		{pool("second", owned, messages.PoolDriverDir), "marked by pool first"},
		{pool("third", foreignCluster, messages.PoolDriverDir), "marked by cluster another-cluste"},
		{pool("fourth", busy, messages.PoolDriverDir), "holds files and no"},
		{pool("fifth", file, messages.PoolDriverDir), "is a regular file"},
		{pool("sixth", root+"/x/../../etc", messages.PoolDriverDir), "not clean"},
	}
	var desired []messages.DesiredPool
	for _, c := range cases {
		desired = append(desired, c.p)
	}
	m.SetDesired(desired)
	for _, c := range cases {
		r := reportOf(t, m, c.p.Name)
		if r.Health != messages.PoolHealthError || !strings.Contains(r.Message, c.want) {
			t.Errorf("%s: %+v, want error containing %q", c.p.Name, r, c.want)
		}
	}
	if _, ok, _ := readMarker(busy); ok {
		t.Fatal("a foreign directory was marked")
	}
	if mk, _, _ := readMarker(owned); mk.PoolID != first.ID {
		t.Fatalf("the first pool's marker changed: %+v", mk)
	}
	if mk, _, _ := readMarker(foreignCluster); mk.Cluster != "another-cluster-fp" {
		t.Fatalf("another cluster's marker changed: %+v", mk)
	}
}

// TestDefaultPoolAdoptsPoolDir: the default pool (no path) is the agent's
// --pool-dir, which already holds images and disks: it is adopted and
// marked, not refused; before the control plane names pools it is reported
// unmarked, as agents always did.
func TestDefaultPoolAdoptsPoolDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "default")
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, dir)
	r := reportOf(t, m, "default")
	if r.Health != messages.PoolHealthOK || r.Path != dir || r.ID != "" || r.TotalBytes <= 0 {
		t.Fatalf("before any desired state: %+v", r)
	}
	if _, ok, _ := readMarker(dir); ok {
		t.Fatal("marked before the control plane named the pool")
	}
	def := pool("default", "", messages.PoolDriverDir)
	m.SetDesired([]messages.DesiredPool{def})
	if r := reportOf(t, m, "default"); r.Health != messages.PoolHealthOK || r.ID != def.ID || r.Path != dir {
		t.Fatalf("default pool: %+v", r)
	}
	if mk, ok, _ := readMarker(dir); !ok || mk.PoolID != def.ID {
		t.Fatalf("marker %+v", mk)
	}
	// A nil desired list (a control plane without pools) keeps the pools.
	m.SetDesired(nil)
	if rs := m.Report(t.Context()); len(rs) != 1 || rs[0].ID != def.ID {
		t.Fatalf("after nil: %+v", rs)
	}
	// An empty one removes them.
	m.SetDesired([]messages.DesiredPool{})
	if rs := m.Report(t.Context()); len(rs) != 0 {
		t.Fatalf("after empty: %+v", rs)
	}
}

// TestBtrfsRefusedElsewhere: a btrfs pool on another filesystem is
// reported as an error naming btrfs, and its directory is not created.
func TestBtrfsRefusedElsewhere(t *testing.T) {
	root := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	if uint32(st.Type) == btrfsMagic {
		t.Skip("the temp dir is on btrfs")
	}
	m := newManager(t, filepath.Join(root, "default"))
	p := pool("cow", filepath.Join(root, "cow"), messages.PoolDriverBtrfs)
	m.SetDesired([]messages.DesiredPool{p})
	r := reportOf(t, m, "cow")
	if r.Health != messages.PoolHealthError || !strings.Contains(r.Message, "btrfs") {
		t.Fatalf("report %+v", r)
	}
	if _, err := os.Stat(p.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the directory was made on the wrong filesystem: %v", err)
	}
}

// TestBtrfsPoolOnLoopBtrfs: on a real (loop-mounted) btrfs the pool is
// made and marked. Root only; CI runs as root.
func TestBtrfsPoolOnLoopBtrfs(t *testing.T) {
	mnt := mountLoop(t, "btrfs", 128<<20)
	m := newManager(t, filepath.Join(t.TempDir(), "default"))
	p := pool("cow", filepath.Join(mnt, "pools", "cow"), messages.PoolDriverBtrfs)
	m.SetDesired([]messages.DesiredPool{p})
	r := reportOf(t, m, "cow")
	if r.Health != messages.PoolHealthOK || r.TotalBytes <= 0 || r.TotalBytes > 128<<20 {
		t.Fatalf("report %+v", r)
	}
	if _, ok, _ := readMarker(p.Path); !ok {
		t.Fatal("not marked")
	}
}

// TestSharedPoolNeedsAMount: a shared pool's path must be a mount point
// (an unmounted NFS mount point is an empty local directory, which must not
// be taken for the shared filesystem); on a mount it is realised.
func TestSharedPoolNeedsAMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	root := t.TempDir()
	m := newManager(t, filepath.Join(root, "default"))
	bare := pool("bare", filepath.Join(root, "bare"), messages.PoolDriverDir)
	bare.Shared = true
	mnt := filepath.Join(root, "nfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	mounted := pool("shared", mnt, messages.PoolDriverDir)
	mounted.Shared = true
	m.SetDesired([]messages.DesiredPool{bare, mounted})
	if r := reportOf(t, m, "bare"); r.Health != messages.PoolHealthError || !strings.Contains(r.Message, "nothing is mounted") {
		t.Fatalf("bare: %+v", r)
	}
	if r := reportOf(t, m, "shared"); r.Health != messages.PoolHealthOK || r.TotalBytes != 16<<20 {
		t.Fatalf("shared: %+v", r)
	}
}

// TestHungFilesystem: a statfs that does not return (a hung network
// mount) costs a report at most the probe timeout, is reported as an
// error, and is not probed again until it returns.
func TestHungFilesystem(t *testing.T) {
	root := t.TempDir()
	release := make(chan struct{})
	var calls atomic.Int32
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	m := New(Config{Cluster: cluster, DefaultDir: root, Log: slog.New(slog.DiscardHandler), ProbeTimeout: 100 * time.Millisecond,
		Statfs: func(path string, st *unix.Statfs_t) error {
			calls.Add(1)
			<-release
			return unix.Statfs(path, st)
		}})
	t.Cleanup(func() { _ = m.Wait(context.Background()) })
	for range 3 {
		start := time.Now()
		rs := m.Report(t.Context())
		if len(rs) != 1 || rs[0].Health != messages.PoolHealthError || !strings.Contains(rs[0].Message, "did not answer") {
			t.Fatalf("hung report: %+v", rs)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("a report waited %v", d)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d probes of a hung filesystem, want 1", n)
	}
	once.Do(func() { close(release) })
	if err := m.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rs := m.Report(t.Context()); rs[0].Health != messages.PoolHealthOK {
		t.Fatalf("after the filesystem answered: %+v", rs)
	}
}

// mountLoop makes a filesystem of the given type and size in a file,
// loop-mounts it in a temp dir, and undoes both when the test ends.
func mountLoop(t *testing.T, fstype string, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop mounts need root")
	}
	mkfs, err := exec.LookPath("mkfs." + fstype)
	if err != nil {
		t.Skipf("no mkfs.%s", fstype)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", mkfs, err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}
