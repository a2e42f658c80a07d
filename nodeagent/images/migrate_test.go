package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// legacyPool is a pool in the layout before content keys: images at the
// top of the cache, VM disks in vms/ backed by them by path.
type legacyPool struct {
	root, cacheDir, diskDir string
	qcowDigest, rawDigest   string
	// disks maps each VM disk to the legacy file it was made on.
	disks map[string]string
	// content maps each VM disk to its guest-visible bytes before migration.
	content map[string][]byte
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// guestBytes is what a guest would read from disk: the whole chain
// flattened by qemu-img convert.
func guestBytes(t *testing.T, disk string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "flat.raw")
	run(t, qemuImgBinary, "convert", "-f", "qcow2", "-O", "raw", disk, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newLegacyPool(t *testing.T) *legacyPool {
	t.Helper()
	needQemuImg(t)
	root := t.TempDir()
	p := &legacyPool{root: root, cacheDir: filepath.Join(root, "images"), diskDir: filepath.Join(root, "vms"),
		disks: map[string]string{}, content: map[string][]byte{}}
	for _, d := range []string{p.cacheDir, p.diskDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A qcow2 image as the old cache stored it (the download verbatim).
	raw := rawDisk(t, 1<<20)
	src := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(src, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(p.cacheDir, "debian-12.qcow2")
	run(t, qemuImgBinary, "convert", "-f", "raw", "-O", "qcow2", src, qcow)
	b, _ := os.ReadFile(qcow)
	p.qcowDigest = digestOf(b)
	// A raw image, and the old layout's companion files.
	rawLegacy := filepath.Join(p.cacheDir, "alpine.img")
	if err := os.WriteFile(rawLegacy, rawDisk(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(rawLegacy)
	p.rawDigest = digestOf(b)
	os.WriteFile(filepath.Join(p.cacheDir, ".alpine.img.sha256"), []byte(p.rawDigest), 0o644)

	mk := func(id, base, format string, pattern byte) {
		disk := filepath.Join(p.diskDir, id+".qcow2")
		run(t, qemuImgBinary, "create", "-q", "-f", "qcow2", "-F", format, "-b", base, disk, "2M")
		// The guest wrote to its disk: the overlay holds data of its own.
		run(t, "qemu-io", "-f", "qcow2", "-c", "write -P "+itoa(int(pattern))+" 64k 64k", disk)
		p.disks[disk] = base
		p.content[disk] = guestBytes(t, disk)
	}
	mk("vm-a", qcow, "qcow2", 0xab)
	mk("vm-b", qcow, "qcow2", 0xcd)
	mk("vm-c", rawLegacy, "raw", 0xef)
	// Not a disk: the seed ISO beside it.
	os.WriteFile(filepath.Join(p.diskDir, "vm-a-seed.iso"), []byte("not qcow2"), 0o644)
	return p
}

func (p *legacyPool) open(t *testing.T) *Cache {
	t.Helper()
	c, err := New("default", p.cacheDir, Options{DiskDirs: []string{p.diskDir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder is the VM records' side of a migration, as a RebaseHook.
type recorder map[string]string

func (r recorder) hook(disk, oldBase, newBase, format string) error {
	if format != "qcow2" {
		return errors.New("format " + format)
	}
	r[disk] = newBase
	return nil
}

// checkMigrated holds the pool to the end state of a migration: no legacy
// file, every disk backed by its content-keyed base (as qemu-img reads the
// chain), the guest data unchanged, every record told.
func (p *legacyPool) checkMigrated(t *testing.T, c *Cache, rec recorder) {
	t.Helper()
	if left := c.LegacyFiles(); len(left) != 0 {
		t.Errorf("legacy files left: %v", left)
	}
	for _, n := range dirNames(t, p.cacheDir) {
		if strings.HasPrefix(n, ".") || n == migrateJournal {
			t.Errorf("cache directory still holds %s", n)
		}
	}
	want := map[string]string{
		filepath.Join(p.diskDir, "vm-a.qcow2"): c.basePath(p.qcowDigest),
		filepath.Join(p.diskDir, "vm-b.qcow2"): c.basePath(p.qcowDigest),
		filepath.Join(p.diskDir, "vm-c.qcow2"): c.basePath(p.rawDigest),
	}
	for disk, base := range want {
		out := run(t, qemuImgBinary, "info", "--backing-chain", "--output=json", "-f", "qcow2", disk)
		var chain []struct {
			Filename      string `json:"filename"`
			Format        string `json:"format"`
			BackingFile   string `json:"full-backing-filename"`
			BackingFormat string `json:"backing-filename-format"`
		}
		if err := json.Unmarshal(out, &chain); err != nil {
			t.Fatal(err)
		}
		if len(chain) != 2 || chain[0].BackingFile != base || chain[0].BackingFormat != "qcow2" ||
			chain[1].Filename != base || chain[1].Format != "qcow2" {
			t.Errorf("%s: backing chain %+v, want it backed by %s (qcow2)", disk, chain, base)
		}
		if got := guestBytes(t, disk); !bytes.Equal(got, p.content[disk]) {
			t.Errorf("%s: the guest's data changed in the migration", disk)
		}
		if rec[disk] != base {
			t.Errorf("%s: record names base %q, want %s", disk, rec[disk], base)
		}
	}
	inv, err := c.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, b := range inv {
		got[b.SHA256] = b.Aliases
		if b.SHA256 == p.qcowDigest && len(b.Users) != 2 || b.SHA256 == p.rawDigest && len(b.Users) != 1 {
			t.Errorf("base %s used by %v", b.SHA256, b.Users)
		}
	}
	if !slices.Equal(got[p.qcowDigest], []string{"debian-12.qcow2"}) || !slices.Equal(got[p.rawDigest], []string{"alpine.img"}) {
		t.Errorf("aliases %v, want the legacy names", got)
	}
}

func TestMigrateLegacyRebasesDisks(t *testing.T) {
	p := newLegacyPool(t)
	c := p.open(t)
	// The qcow2 is moved, not copied: the base is the legacy file's inode.
	legacyKey, _ := keyOf(filepath.Join(p.cacheDir, "debian-12.qcow2"))
	rec := recorder{}
	rep, err := c.MigrateLegacy(context.Background(), rec.hook)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Migrated) != 2 || len(rep.Rebased) != 3 || len(rep.Kept) != 0 {
		t.Errorf("report %+v, want 2 migrated, 3 rebased", rep)
	}
	if k, _ := keyOf(c.basePath(p.qcowDigest)); k != legacyKey {
		t.Error("the legacy qcow2 was copied, want it linked")
	}
	p.checkMigrated(t, c, rec)
	// A second start has nothing to do.
	rep, err = c.MigrateLegacy(context.Background(), rec.hook)
	if err != nil || len(rep.Migrated)+len(rep.Rebased)+len(rep.Kept) != 0 {
		t.Errorf("second migration: %+v, %v", rep, err)
	}
}

// TestMigrateLegacyResumesAfterKill stops the migration at every kill point
// (every occurrence of each), as a kill -9 would, and checks that the next
// start finishes it with the same result.
func TestMigrateLegacyResumesAfterKill(t *testing.T) {
	for _, step := range []string{"journaled", "base", "rebase", "rebased", "remove"} {
		for nth := 1; nth <= 3; nth++ {
			t.Run(step+"-"+itoa(nth), func(t *testing.T) {
				p := newLegacyPool(t)
				c := p.open(t)
				seen := 0
				stopped := false
				c.migrateHook = func(s string) error {
					if s == step {
						seen++
						if seen == nth {
							stopped = true
							return errMigrateStop
						}
					}
					return nil
				}
				rec := recorder{}
				_, err := c.MigrateLegacy(context.Background(), rec.hook)
				if stopped != errors.Is(err, errMigrateStop) {
					t.Fatalf("stopped %v, err %v", stopped, err)
				}
				if !stopped {
					t.Skip("the migration has fewer kill points of this step")
				}
				c.Close()
				// The restarted agent.
				c2 := p.open(t)
				if _, err := c2.MigrateLegacy(context.Background(), rec.hook); err != nil {
					t.Fatal(err)
				}
				p.checkMigrated(t, c2, rec)
			})
		}
	}
}

// TestMigrateLegacyKeepsLockedDisk: a disk a running QEMU holds cannot be
// rebased under it; its legacy file stays until a later start, and the
// other disks are migrated.
func TestMigrateLegacyKeepsLockedDisk(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	p := newLegacyPool(t)
	locked := filepath.Join(p.diskDir, "vm-b.qcow2")
	ctx, cancel := context.WithCancel(context.Background())
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
		"-S", "-qmp", "stdio", "-blockdev", "driver=qcow2,node-name=d0,file.driver=file,file.filename="+locked)
	stdin, _ := qemu.StdinPipe()
	stdout, _ := qemu.StdoutPipe()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stdin.Close(); qemu.Wait() })
	// QMP's greeting comes once the block devices are open (and locked).
	buf := make([]byte, 256)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatal(err)
	}
	c := p.open(t)
	rec := recorder{}
	rep, err := c.MigrateLegacy(context.Background(), rec.hook)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.Kept["debian-12.qcow2"]; !ok || len(rep.Rebased) != 2 {
		t.Fatalf("report %+v: want debian-12.qcow2 kept for the locked disk", rep)
	}
	if _, err := os.Stat(filepath.Join(p.cacheDir, "debian-12.qcow2")); err != nil {
		t.Fatalf("legacy file of a locked disk removed: %v", err)
	}
	if _, ok := rec[locked]; ok {
		t.Error("the record of the locked disk was rewritten")
	}
	// The VM stops; the next start finishes.
	cancel()
	stdin.Close()
	qemu.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err = c.MigrateLegacy(context.Background(), rec.hook)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Kept) == 0 || time.Now().After(deadline) {
			break
		}
	}
	p.checkMigrated(t, c, rec)
}
