package volumes

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// TestBases: a raw base is named as raw in the overlay's header, and a base
// that would make QEMU open another file is refused before anything is
// written.
func TestBases(t *testing.T) {
	dir := t.TempDir()
	d := mustNew(t, DriverDir, filepath.Join(dir, "pool"), "node-a")
	raw := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", raw, "4M")
	qemuIO(t, "raw", raw, false, "write -P 0x61 0 1M")
	info, err := d.Create(bg, CreateOptions{Name: "from-raw", Base: raw})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Chain) != 1 || info.Chain[0].Format != formatRaw || info.VirtualSize != 4*mib {
		t.Fatalf("volume on a raw base: %+v", info)
	}
	if !hasPattern(t, info.Format, info.Path, 0x61, 0, mib) {
		t.Fatal("volume does not read as its raw base")
	}

	qcow := makeBase(t, dir, 4*mib, 0x62)
	withBacking := filepath.Join(dir, "layered.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", qcow, withBacking)
	dataFile := filepath.Join(dir, "external.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), dataFile, "4M")
	fifo := filepath.Join(dir, "fifo")
	if err := makeFifo(fifo); err != nil {
		t.Fatal(err)
	}
	for name, base := range map[string]string{
		"backing file":  withBacking,
		"data file":     dataFile,
		"fifo":          fifo,
		"directory":     dir,
		"relative path": "base.raw",
		"missing":       filepath.Join(dir, "nope"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := d.Create(bg, CreateOptions{Name: "bad", Base: base})
			wantCode(t, err, CodeBaseInvalid)
			if _, err := d.Stat(bg, "bad"); ErrorCode(err) != CodeNotFound {
				t.Fatalf("a refused create left a volume: %v", err)
			}
		})
	}
}

// TestConcurrentOps: clones, snapshots and deletes of one source from
// many goroutines at once all succeed and leave exactly what they made.
func TestConcurrentOps(t *testing.T) {
	root := filepath.Join(t.TempDir(), "pool")
	d := mustNew(t, DriverDir, root, "node-a")
	src, err := d.Create(bg, CreateOptions{Name: "src", Size: 4 * mib})
	if err != nil {
		t.Fatal(err)
	}
	writePattern(t, src, 0x71, 0, mib)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() {
			c := fmt.Sprintf("c%d", i)
			if _, err := d.Clone(bg, CloneOptions{Name: c, Source: "src"}); err != nil {
				errs <- err
				return
			}
			if _, err := d.CreateSnapshot(bg, "src", fmt.Sprintf("s%d", i)); err != nil {
				errs <- err
			}
			if err := d.Delete(bg, c); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pg, err := d.List(bg, "", 100)
	if err != nil || !slices.Equal(pg.Names, []string{"src"}) {
		t.Fatalf("List: %+v %v", pg, err)
	}
	snaps, err := d.ListSnapshots(bg, "src")
	if err != nil || len(snaps) != n {
		t.Fatalf("snapshots: %d %v", len(snaps), err)
	}
	for _, s := range snaps {
		if !hasPattern(t, s.Format, s.Path, 0x71, 0, mib) {
			t.Fatalf("snapshot %s does not read as its volume", s.Name)
		}
	}
	if l := leftovers(t, root); len(l) != 0 {
		t.Fatalf("left behind: %v", l)
	}
}

func makeFifo(path string) error { return syscall.Mkfifo(path, 0o600) }
