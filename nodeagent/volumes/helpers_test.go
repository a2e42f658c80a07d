package volumes

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// env is a driver on a filesystem the test made.
type env struct {
	name   string
	driver string
	fs     fsKind
}

var envs = []env{
	{"dir-ext4", DriverDir, ext4},
	{"dir-xfs-reflink", DriverDir, xfs},
	{"btrfs", DriverBtrfs, btrfsK},
}

// newDriver mounts e's filesystem and returns a driver for node on a pool
// directory in it.
func newDriver(t testing.TB, e env, node string) (Driver, string) {
	t.Helper()
	mnt := mountFS(t, e.fs, 0)
	root := filepath.Join(mnt, "pool")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	return mustNew(t, e.driver, root, node), root
}

func mustNew(t testing.TB, driver, root, node string) Driver {
	t.Helper()
	needQemuUtils(t)
	d, err := New(driver, Config{Root: root, Node: node})
	if err != nil {
		t.Fatalf("New(%s): %v", driver, err)
	}
	return d
}

// qemuIO runs qemu-io commands on a volume file.
func qemuIO(t testing.TB, format, path string, readonly bool, cmds ...string) string {
	t.Helper()
	args := []string{"-f", format}
	if readonly {
		args = append(args, "-r")
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, path)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "failed") || strings.Contains(string(out), "error") {
		t.Fatalf("qemu-io %v %s: %v: %s", cmds, path, err, out)
	}
	return string(out)
}

// writePattern fills [off, off+n) of the volume with byte b.
func writePattern(t testing.TB, info Info, b byte, off, n int64) {
	t.Helper()
	qemuIO(t, info.Format, info.Path, false, "write -P "+itoa(int64(b))+" "+itoa(off)+" "+itoa(n))
}

// hasPattern reports whether [off, off+n) of the image at path reads as b.
func hasPattern(t testing.TB, format, path string, b byte, off, n int64) bool {
	t.Helper()
	out, _ := exec.Command("qemu-io", "-r", "-f", format, "-c", "read -P "+itoa(int64(b))+" "+itoa(off)+" "+itoa(n), path).CombinedOutput()
	return !strings.Contains(string(out), "Pattern verification failed") && strings.Contains(string(out), "read ")
}

func itoa(n int64) string { return sizeArg(n) }

// checkImage runs qemu-img check on a qcow2 volume.
func checkImage(t testing.TB, info Info) {
	t.Helper()
	if info.Format != formatQCOW2 {
		return
	}
	if out, err := exec.Command("qemu-img", "check", "-q", "-f", "qcow2", info.Path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check %s: %v: %s", info.Path, err, out)
	}
}

// leftovers lists temporary entries and journal records anywhere under
// root: after a finished operation or a Recover there must be none.
func leftovers(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if strings.HasPrefix(e.Name(), ".") || (strings.HasPrefix(rel, dirJournal+"/") && !e.IsDir()) {
			out = append(out, rel)
		}
		// Do not walk into volumes' subvolumes or snapshots' content.
		if e.IsDir() && (filepath.Dir(rel) == dirVolumes || filepath.Dir(filepath.Dir(rel)) == dirSnapshots) {
			return filepath.SkipDir
		}
		return nil
	})
	return out
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if ErrorCode(err) != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
}

// makeBase writes a qcow2 image base of size bytes whose first MiB reads
// as byte b.
func makeBase(t testing.TB, dir string, size int64, b byte) string {
	t.Helper()
	p := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, itoa(size))
	qemuIO(t, "qcow2", p, false, "write -P "+itoa(int64(b))+" 0 1M")
	return p
}

var bg = context.Background()
