package volumes

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// fsKind is a filesystem the driver tests make on a loop device.
type fsKind struct {
	name string
	mkfs []string // argv before the image path
	size int64    // bytes of the sparse image file
}

var (
	ext4   = fsKind{"ext4", []string{"mkfs.ext4", "-q", "-F"}, 256 << 20}
	xfs    = fsKind{"xfs", []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=1"}, 320 << 20}
	btrfsK = fsKind{"btrfs", []string{"mkfs.btrfs", "-q", "-f"}, 256 << 20}
)

// mountFS makes a throwaway filesystem of kind (or of size bytes, when
// size > 0) on a loop device and returns its mount point. The mount, the
// loop device and the image are removed in t.Cleanup, also when the test
// fails. It skips, saying why, when not root or when a tool is missing.
func mountFS(t testing.TB, kind fsKind, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to loop-mount %s (CI runs as root)", kind.name)
	}
	for _, tool := range []string{kind.mkfs[0], "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh --test installs it)", tool)
		}
	}
	needQemuUtils(t)
	if size == 0 {
		size = kind.size
	}
	dir := t.TempDir()
	img := filepath.Join(dir, kind.name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	run(t, append(kind.mkfs, img)...)
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", loop, mnt)
	t.Cleanup(func() {
		// A process of the test may still hold a file for a moment
		// (qemu-img killed by a cancelled context): retry, then detach.
		var last string
		ok := testutil.Until(10*time.Second, 50*time.Millisecond, func() bool {
			out, err := exec.Command("umount", mnt).CombinedOutput()
			last = string(out)
			return err == nil
		})
		if !ok {
			exec.Command("umount", "-l", mnt).Run()
			t.Errorf("umount %s: %s", mnt, last)
		}
	})
	return mnt
}

// needQemuUtils skips without qemu-img and qemu-io, unless
// OTHERIX_REQUIRE_QEMU=1 (CI) says this run exists to exercise them.
func needQemuUtils(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("OTHERIX_REQUIRE_QEMU") == "1" {
				t.Fatalf("%s is required (OTHERIX_REQUIRE_QEMU=1) but not in PATH", tool)
			}
			t.Skipf("%s not installed (scripts/install-deps.sh installs qemu-utils)", tool)
		}
	}
}

func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}
