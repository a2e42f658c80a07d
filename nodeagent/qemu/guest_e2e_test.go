//go:build e2e

package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/test/guest"
)

// A booted test guest (TCG) behind a sandboxed QEMU, driven over its
// serial console's root shell.
type testGuest struct {
	t   *testing.T
	s   Spec
	p   *Process
	m   *Monitor
	con net.Conn

	mu  sync.Mutex
	out []byte
	seq int
}

// bootGuest starts the test guest and waits for its boot marker.
func bootGuest(t *testing.T) *testGuest {
	t.Helper()
	img := guest.Image(t)
	s := sandboxed(t)
	s.MemoryMiB = 256
	s.Base, s.BaseFormat = img, "qcow2"
	os.Remove(s.Disk)
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img, s.Disk)
	g := &testGuest{t: t, s: s}
	g.p = startVM(t, s)
	g.m = dial(t, g.p)
	con, err := net.Dial("unix", SerialPath(s.RunDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { con.Close() })
	g.con = con
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := con.Read(buf)
			g.mu.Lock()
			g.out = append(g.out, buf[:n]...)
			g.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if err := g.m.Cont(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	g.wait(regexp.MustCompile(guest.ReadyMarker), 3*time.Minute)
	return g
}

// wait returns the first match of re in the console output since the
// start, failing the test after timeout.
func (g *testGuest) wait(re *regexp.Regexp, timeout time.Duration) []string {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g.mu.Lock()
		m := re.FindSubmatch(g.out)
		out := string(g.out)
		g.mu.Unlock()
		if m != nil {
			s := make([]string, len(m))
			for i, b := range m {
				s[i] = string(b)
			}
			return s
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("no %s on the console within %s; output:\n%s", re, timeout, tail(out, 3000))
		}
		time.Sleep(50 * time.Millisecond) // polling the console buffer, not synchronising
	}
}

// sh runs cmd in the guest's shell and returns what it printed. The
// shell may still be starting after the marker, so the command is typed
// again until its end marker appears.
func (g *testGuest) sh(cmd string, timeout time.Duration) string {
	g.t.Helper()
	g.seq++
	// The marker is built by the shell ($((…))), so the echo of the typed
	// line never matches it.
	n := g.seq
	line := fmt.Sprintf("echo B-$((%d+1000)); %s; echo E-$((%d+1000))\n", n, cmd, n)
	re := regexp.MustCompile(fmt.Sprintf(`(?s)\nB-%d\r?\n(.*?)E-%d\r?\n`, n+1000, n+1000))
	deadline := time.Now().Add(timeout)
	for {
		if _, err := g.con.Write([]byte(line)); err != nil {
			g.t.Fatal(err)
		}
		try := time.Now().Add(5 * time.Second)
		for time.Now().Before(try) {
			g.mu.Lock()
			m := re.FindSubmatch(g.out)
			g.mu.Unlock()
			if m != nil {
				return strings.ReplaceAll(string(m[1]), "\r", "")
			}
			time.Sleep(50 * time.Millisecond) // polling the console buffer
		}
		if time.Now().After(deadline) {
			g.mu.Lock()
			out := string(g.out)
			g.mu.Unlock()
			g.t.Fatalf("%q did not finish in the guest within %s; output:\n%s", cmd, timeout, tail(out, 3000))
		}
	}
}

// until runs cmd in the guest until its output matches re.
func (g *testGuest) until(cmd string, re *regexp.Regexp, timeout time.Duration) string {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := g.sh(cmd, timeout)
		if re.MatchString(out) {
			return out
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("%q never printed %s within %s; last:\n%s", cmd, re, timeout, out)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// listDisks prints "name serial sectors" per virtio disk the guest has.
const listDisks = `for d in /sys/block/vd*; do echo "disk $(basename $d) $(cat $d/serial 2>/dev/null) $(cat $d/size)"; done`

// TestGuestSeesHotplug: a volume hot-plugged into the running test guest
// appears in it with its serial, grows live, and disappears again on
// detach (the guest releases it through PCIe/ACPI hot-plug).
func TestGuestSeesHotplug(t *testing.T) {
	g := bootGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := g.sh(listDisks, time.Minute)
	if strings.Contains(before, "otx-data1") {
		t.Fatalf("disk present before attach:\n%s", before)
	}
	data := filepath.Join(filepath.Dir(g.s.Disk), "data.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", data, "32M")
	if err := g.m.AttachDisk(ctx, Disk{ID: "data1", Serial: "otx-data1", Path: data}); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`disk (vd[a-z]+) otx-data1 65536\n`)
	out := g.until(listDisks, re, 2*time.Minute)
	dev := re.FindStringSubmatch(out)[1]
	t.Logf("the guest sees the hot-plugged disk as %s", dev)

	// The guest writes to it, and the data lands in the image.
	g.sh("echo otherix-marker | dd of=/dev/"+dev+" bs=512 count=1 conv=fsync 2>&1", time.Minute)

	if err := g.m.ResizeDisk(ctx, "data1", 48<<20); err != nil {
		t.Fatal(err)
	}
	g.until(listDisks, regexp.MustCompile(`disk `+dev+` otx-data1 98304\n`), time.Minute)

	start := time.Now()
	if err := g.m.DetachDisk(ctx, "data1", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("detach took %s", time.Since(start).Round(time.Millisecond))
	gone := time.Now().Add(time.Minute)
	for out := g.sh(listDisks, time.Minute); strings.Contains(out, "otx-data1"); out = g.sh(listDisks, time.Minute) {
		if time.Now().After(gone) {
			t.Fatalf("the guest still lists the detached disk:\n%s", out)
		}
	}
	if strings.Contains(nodeNames(t, g.m), "data1") {
		t.Errorf("nodes left: %s", nodeNames(t, g.m))
	}
	sets, err := g.m.QueryFDSets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range sets {
		for _, fd := range set.FDs {
			if fd.Opaque == data {
				t.Errorf("QEMU still holds a descriptor of %s (fdset %d)", data, set.ID)
			}
		}
	}
	// Released by QEMU: the file can go, and it holds what the guest wrote.
	b, err := os.ReadFile(data)
	if err != nil || !strings.Contains(string(b), "otherix-marker") {
		t.Errorf("the guest's write is not in the image (%v)", err)
	}
}

// TestGuestFillsHotpluggedDisk: a hot-plugged disk whose image sits on a
// full filesystem pauses the guest (werror=enospc, as for the boot disk):
// QEMU reports BLOCK_IO_ERROR with nospace and STOP, the run state is
// io-error; once space is freed, cont resumes it and the write completes.
func TestGuestFillsHotpluggedDisk(t *testing.T) {
	g := bootGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mnt := filepath.Join(filepath.Dir(g.s.Disk), "small")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	data := filepath.Join(mnt, "data.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", data, "64M")
	events, unsub := g.m.subscribe()
	defer unsub()
	if err := g.m.AttachDisk(ctx, Disk{ID: "data1", Serial: "otx-full", Path: data}); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`disk (vd[a-z]+) otx-full `)
	dev := re.FindStringSubmatch(g.until(listDisks, re, 2*time.Minute))[1]
	// 8 MiB into a 4 MiB filesystem, in the background: the shell must
	// stay free, and the guest will be paused mid-write.
	if _, err := g.con.Write([]byte("dd if=/dev/urandom of=/dev/" + dev + " bs=1M count=8 oflag=direct 2>/tmp/dd.err; echo DD-DONE-$((40+2)) &\n")); err != nil {
		t.Fatal(err)
	}
	ev := wantEventWithin(t, events, "BLOCK_IO_ERROR", 2*time.Minute)
	if ns, _ := ev.Data["nospace"].(bool); !ns || ev.Data["action"] != "stop" || DiskOfNode(fmt.Sprint(ev.Data["node-name"])) != "data1" {
		t.Fatalf("BLOCK_IO_ERROR %v: want nospace, action stop, on data1", ev.Data)
	}
	wantEventWithin(t, events, "STOP", time.Minute)
	if st, err := g.m.Status(ctx); err != nil || st.Status != "io-error" {
		t.Fatalf("status %+v %v, want io-error", st, err)
	}
	// Free space: the filesystem grows (as an operator would delete
	// something), then cont retries the write.
	if out, err := exec.Command("mount", "-o", "remount,size=96m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	if err := g.m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	g.wait(regexp.MustCompile(`DD-DONE-42`), 2*time.Minute)
	if st, err := g.m.Status(ctx); err != nil || st.Status != "running" {
		t.Fatalf("status %+v %v after cont", st, err)
	}
	if out := g.sh("cat /tmp/dd.err", time.Minute); !strings.Contains(out, "8+0 records out") {
		t.Errorf("dd in the guest: %s", out)
	}
}

func wantEventWithin(t *testing.T, ch <-chan Event, name string, d time.Duration) Event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("events closed before %s", name)
			}
			if e.Name == name {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s within %s", name, d)
		}
	}
}
