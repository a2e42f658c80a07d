// Command snapshot measures the guest-visible pause of a live snapshot
// (issue #16): the time from sending the QMP transaction that puts new
// overlays on every disk of a running VM to its return. QEMU drains and
// holds the guest's I/O on those disks for that long (the vCPUs run on).
//
// It boots the test guest (TCG) behind a sandboxed QEMU exactly as the
// agent starts it (nodeagent/qemu.Start), hot-plugs a data disk, and takes
// -n snapshots of both disks, one transaction each, first with the guest
// idle and then with the guest writing to the data disk in a loop (dd,
// O_DIRECT, 1 MiB, so requests are in flight when the transaction drains).
// The overlays are created before the timer starts, as Snapshot does.
//
// Usage: go run ./test/bench/snapshot [-n 50] [-keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/test/guest"
)

func main() {
	n := flag.Int("n", 50, "snapshots per run")
	keep := flag.Bool("keep", false, "keep the temp dir")
	flag.Parse()
	fmt.Printf("snapshot bench: %s, accelerator: tcg, %s\n", time.Now().UTC().Format(time.RFC3339), load())
	if err := run(*n, *keep); err != nil {
		fmt.Println("snapshot bench: FAILED:", err)
		os.Exit(1)
	}
	fmt.Printf("snapshot bench: done, %s\n", load())
}

func run(n int, keep bool) (err error) {
	if err := qemu.SetChildSubreaper(); err != nil {
		return err
	}
	cache, err := guest.CacheDir()
	if err != nil {
		return err
	}
	img, out, err := guest.Build(cache)
	if err != nil {
		return fmt.Errorf("test guest: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "osb")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	disk := filepath.Join(dir, "disk.qcow2")
	data := filepath.Join(dir, "data.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img, disk},
		{"create", "-q", "-f", "qcow2", data, "256M"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img: %v: %s", err, out)
		}
	}
	ctx := context.Background()
	p, err := qemu.Start(ctx, qemu.Spec{ID: "snapbench", Accel: "tcg", CPUs: 1, MemoryMiB: 256,
		Disk: disk, Base: img, BaseFormat: "qcow2", RunDir: filepath.Join(dir, "run"), Sandbox: os.Getenv("NOSANDBOX") == ""})
	if err != nil {
		return err
	}
	defer func() {
		if s := p.Stderr(); s != "" {
			fmt.Printf("qemu's stderr:\n%s\n", s)
		}
		_ = p.Kill()
		<-p.Exited()
		p.Close()
	}()
	m, err := qemu.Dial(ctx, qemu.QMPPath(p.RunDir))
	if err != nil {
		return err
	}
	defer m.Close()
	con, err := dialConsole(p.RunDir)
	if err != nil {
		return err
	}
	defer con.Close()
	events := m.Events()
	defer func() {
		if err == nil {
			return
		}
		con.mu.Lock()
		out := string(con.out)
		con.mu.Unlock()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		fmt.Printf("console tail:\n%s\n", out)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				fmt.Printf("event %s %v\n", ev.Name, ev.Data)
			case <-time.After(time.Second):
				return
			}
		}
	}()
	if err := m.Cont(ctx); err != nil {
		return err
	}
	if err := con.wait(regexp.MustCompile(guest.ReadyMarker), 3*time.Minute); err != nil {
		return err
	}
	if err := m.AttachDisk(ctx, qemu.Disk{ID: "data1", Serial: "bench", Path: data}); err != nil {
		return err
	}
	tops := map[string]string{"disk0": disk, "data1": data}
	seq := 0
	measure := func(label string) error {
		var pauses []time.Duration
		for i := 0; i < n; i++ {
			seq++
			var disks []qemu.SnapshotDisk
			for _, id := range []string{"disk0", "data1"} {
				o := filepath.Join(dir, fmt.Sprintf("%s-s%d.qcow2", id, seq))
				disks = append(disks, qemu.SnapshotDisk{ID: id, Seq: seq, Overlay: o, Backing: tops[id]})
			}
			res, err := m.Snapshot(ctx, disks)
			if err != nil {
				return fmt.Errorf("snapshot %d: %w", seq, err)
			}
			for _, d := range disks {
				tops[d.ID] = d.Overlay
			}
			pauses = append(pauses, res.Pause)
		}
		slices.Sort(pauses)
		fmt.Printf("%s: %d snapshots of 2 disks, transaction p50 %s, p99 %s, max %s, min %s\n", label, n,
			ms(pct(pauses, 50)), ms(pct(pauses, 99)), ms(pauses[len(pauses)-1]), ms(pauses[0]))
		// Merge every snapshot back (active commit, live), which keeps
		// the chain under qemu.MaxChainDepth for the next run.
		start := time.Now()
		for _, id := range []string{"disk0", "data1"} {
			res, err := m.Commit(ctx, qemu.CommitRequest{Disk: id, Top: qemu.OverlayNode(id, seq), Base: qemu.TopNode(id)})
			if err != nil {
				return fmt.Errorf("commit %s: %w", id, err)
			}
			for _, l := range res.Removed {
				if qemu.OwnImage(id, l.Node) {
					os.Remove(l.Path)
				}
			}
		}
		tops = map[string]string{"disk0": disk, "data1": data}
		fmt.Printf("%s: committing the %d overlays of both disks back took %s\n", label, n, time.Since(start).Round(time.Millisecond))
		return nil
	}
	if err := measure("idle guest"); err != nil {
		return err
	}
	// The guest's writer: the data disk is found by its serial.
	loop := `for d in /sys/block/vd*; do [ "$(cat $d/serial)" = bench ] && v=$(basename $d); done; ` +
		`while :; do dd if=/dev/zero of=/dev/$v bs=1M count=64 oflag=direct 2>/dev/null; echo W-$((1+1)); done &`
	if _, err := con.Write([]byte(loop + "\n")); err != nil {
		return err
	}
	if err := con.wait(regexp.MustCompile(`W-2`), 2*time.Minute); err != nil {
		return fmt.Errorf("the guest's writer did not run: %w", err)
	}
	st, err := m.BlockStats(ctx)
	if err != nil {
		return err
	}
	if err := measure("guest writing"); err != nil {
		return err
	}
	st2, err := m.BlockStats(ctx)
	if err != nil {
		return err
	}
	written := func(stats []qemu.BlockStat) int64 {
		for _, b := range stats {
			if qemu.DiskOfNode(b.NodeName) == "data1" {
				return b.Stats.WriteBytes
			}
		}
		return 0
	}
	fmt.Printf("the guest wrote %d MiB to the data disk during the run\n", (written(st2)-written(st))>>20)
	if s, err := m.Status(ctx); err != nil || !s.Running {
		return fmt.Errorf("the VM is not running after the snapshots: %+v %v", s, err)
	}
	return nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	if i > 0 {
		i--
	}
	return sorted[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func load() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "load ?"
	}
	return "load " + strings.Join(f[:3], " ")
}

// console is the guest's serial console, its output kept.
type console struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func dialConsole(runDir string) (*console, error) {
	c, err := net.Dial("unix", qemu.SerialPath(runDir))
	if err != nil {
		return nil, err
	}
	con := &console{Conn: c}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			con.mu.Lock()
			con.out = append(con.out, buf[:n]...)
			con.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return con, nil
}

func (c *console) wait(re *regexp.Regexp, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		ok := re.Match(c.out)
		c.mu.Unlock()
		if ok {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no %s on the console within %s", re, d)
}
