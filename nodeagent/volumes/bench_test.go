package volumes

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

const benchVolumes = 10_000

// cpuTime is this process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// populate makes benchVolumes volumes in a fresh pool of driver e: for
// dir, reflink copies of one qcow2 made by the driver (distinct inodes
// at metadata cost); for btrfs, real subvolumes each with a sparse
// disk.raw, synced once at the end.
func populate(b *testing.B, e env) Driver {
	b.Helper()
	e.fs.size = 1 << 30 // btrfs needs room for 10,000 subvolumes' metadata
	d, root := newDriver(b, e, "node-a")
	switch dd := d.(type) {
	case *dirDriver:
		tmpl, err := d.Create(bg, CreateOptions{Name: "template", Size: 64 * mib})
		if err != nil {
			b.Fatal(err)
		}
		src, err := os.Open(tmpl.Path)
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		for i := range benchVolumes {
			dst, err := os.OpenFile(dd.volFile(fmt.Sprintf("vol-%05d", i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if err := copyFile(bg, dst, src, dd.reflink); err != nil {
				b.Fatal(err)
			}
			dst.Close()
		}
		if err := d.Delete(bg, "template"); err != nil {
			b.Fatal(err)
		}
	case *btrfsDriver:
		for i := range benchVolumes {
			dir := dd.volDir(fmt.Sprintf("vol-%05d", i))
			if err := subvolCreate(dir); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, btrfsDisk), nil, 0o600); err != nil {
				b.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(dir, btrfsDisk), 64*mib); err != nil {
				b.Fatal(err)
			}
		}
		if err := dd.syncfs(); err != nil {
			b.Fatal(err)
		}
	}
	_ = root
	return d
}

// BenchmarkPoolScan10k: a pool scan of 10,000 volumes in chunks of 500,
// as the control plane's scan loop does: names only ("list"), and names
// plus Stat of each volume ("list+stat": header read, allocation, owner
// marker). One op is the whole scan; cpu-ms/op is user+system CPU.
func BenchmarkPoolScan10k(b *testing.B) {
	for _, e := range []env{envs[1], envs[2]} {
		b.Run(e.name, func(b *testing.B) {
			d := populate(b, e)
			for _, withStat := range []bool{false, true} {
				name := "list"
				if withStat {
					name = "list+stat"
				}
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					cpu0 := cpuTime(b)
					b.ResetTimer()
					for b.Loop() {
						n, after := 0, ""
						for {
							pg, err := d.List(bg, after, 500)
							if err != nil {
								b.Fatal(err)
							}
							for _, v := range pg.Names {
								if withStat {
									if _, err := d.Stat(bg, v); err != nil {
										b.Fatal(err)
									}
								}
								n++
							}
							if pg.Next == "" {
								break
							}
							after = pg.Next
						}
						if n != benchVolumes {
							b.Fatalf("scanned %d volumes, want %d", n, benchVolumes)
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
				})
			}
		})
	}
}

// BenchmarkClone: cloning a volume holding 64 MiB of data, against a full
// copy of the same file. Each op clones (timed) and deletes the clone
// (not timed).
func BenchmarkClone(b *testing.B) {
	for _, e := range envs {
		b.Run(e.name, func(b *testing.B) {
			e.fs.size = 1 << 30 // room for the full copies
			d, root := newDriver(b, e, "node-a")
			vol, err := d.Create(bg, CreateOptions{Name: "src", Size: 128 * mib})
			if err != nil {
				b.Fatal(err)
			}
			writePattern(b, vol, 0x5a, 0, 64*mib)
			if _, err := d.CreateSnapshot(bg, "src", "s"); err != nil {
				b.Fatal(err)
			}
			cases := []struct {
				name string
				opts CloneOptions
			}{
				{"clone-volume", CloneOptions{Name: "c", Source: "src"}},
				{"clone-snapshot", CloneOptions{Name: "c", Source: "src", Snapshot: "s"}},
			}
			for _, c := range cases {
				b.Run(c.name, func(b *testing.B) {
					for b.Loop() {
						if _, err := d.Clone(bg, c.opts); err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						if err := d.Delete(bg, "c"); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
				})
			}
			// The baseline: the volume's file copied byte for byte through
			// user space, as cp without reflinks does (copy_file_range
			// would reflink on xfs and btrfs), then synced.
			b.Run("full-copy", func(b *testing.B) {
				dst := filepath.Join(root, "copy")
				for b.Loop() {
					if err := byteCopy(dst, vol.Path); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					os.Remove(dst)
					b.StartTimer()
				}
			})
		})
	}
}

func byteCopy(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	// The wrappers hide ReadFrom/WriteTo, so io.Copy cannot use
	// copy_file_range or sendfile.
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20)); err != nil {
		return err
	}
	return out.Sync()
}
