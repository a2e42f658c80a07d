package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// TestDropOrphans: what an agent killed between the steps of a snapshot
// (overlay added, transaction never sent) or of a hot-plug (nodes added,
// no device) leaves in QEMU is found and removed, and nothing else is.
func TestDropOrphans(t *testing.T) {
	s := sandboxed(t)
	dir := filepath.Dir(s.Disk)
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	before, sets := nodeNames(t, m), fdsetCount(t, m)
	overlay := filepath.Join(dir, "o1.qcow2")
	if err := createOverlay(ctx, overlay, s.Disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	var rv revert
	if err := m.addImage(ctx, &rv, OverlayNode("disk0", 1), overlay, "qcow2", "", false); err != nil {
		t.Fatal(err)
	}
	data := newImage(t, s, "data2.qcow2", "16M")
	if err := m.addImage(ctx, &rv, TopNode("data2"), data, "qcow2", "", false); err != nil {
		t.Fatal(err)
	}
	// The agent died here. Its successor:
	got, err := m.DropOrphans(ctx, "disk0")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Node != "disk0-s1" || got[0].Path != overlay {
		t.Fatalf("orphans of disk0: %+v", got)
	}
	if got, err = m.DropOrphans(ctx, "data2"); err != nil || len(got) != 1 || got[0].Path != data {
		t.Fatalf("orphans of data2: %+v %v", got, err)
	}
	if after := nodeNames(t, m); after != before {
		t.Errorf("nodes %s, want %s", after, before)
	}
	if n := fdsetCount(t, m); n != sets {
		r, _ := qmpRaw(ctx, m, "query-fdsets", nil)
		t.Errorf("%d fdsets, want %d: %s", n, sets, r)
	}
	if got := chainNodes(t, m, "disk0"); got != "disk0" {
		t.Errorf("chain %s", got)
	}
	if got, err := m.DropOrphans(ctx, "disk0"); err != nil || len(got) != 0 {
		t.Errorf("second pass: %+v %v", got, err)
	}
}

// TestCommitSurvivesAgentDeath: the agent's QMP connection ends in the
// middle of a (rate-limited) commit. QEMU carries on; the next agent's
// Commit with the same request finds the job by its id, waits for it,
// removes the merged images' nodes and reports them, and the data is
// intact.
func TestCommitSurvivesAgentDeath(t *testing.T) {
	s := sandboxed(t)
	dir := filepath.Dir(s.Disk)
	p := startVM(t, s)
	m := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	o1 := filepath.Join(dir, "o1.qcow2")
	if _, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "disk0", Seq: 1, Overlay: o1, Backing: s.Disk}}); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, m, "disk0", "write -P 0x5a 0 4M")
	o2 := filepath.Join(dir, "o2.qcow2")
	if _, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "disk0", Seq: 2, Overlay: o2, Backing: o1}}); err != nil {
		t.Fatal(err)
	}
	req := CommitRequest{Disk: "disk0", Top: "disk0-s1", Base: "disk0", BasePath: s.Disk, Speed: 1 << 20}
	done := make(chan error, 1)
	go func() { _, err := m.Commit(ctx, req); done <- err }()
	if !testutil.Until(30*time.Second, 20*time.Millisecond, func() bool {
		j, ok, err := m.job(ctx, "commit-disk0")
		return err == nil && ok && j.Status == "running"
	}) {
		t.Fatal("the commit job never ran")
	}
	m.Close() // the agent dies
	if err := <-done; err == nil {
		t.Fatal("commit returned nil after its connection ended")
	}

	m2 := dial(t, p)
	res, err := m2.Commit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Path != o1 {
		t.Fatalf("removed %+v, want %s", res.Removed, o1)
	}
	if got := chainNodes(t, m2, "disk0"); got != "disk0-s2,disk0" {
		t.Fatalf("chain %s", got)
	}
	if jobs, err := m2.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("jobs left: %+v %v", jobs, err)
	}
	if b := backingOf(t, o2); b != s.Disk {
		t.Errorf("%s names backing %q", o2, b)
	}
	qemuIO(t, m2, "disk0", "flush")
	out, err := runQemuIO("-U", "-r", "-f", "qcow2", "-c", "read -P 0x5a 0 4M", o2)
	if err != nil || strings.Contains(out, "fail") {
		t.Errorf("data after the resumed commit: %v: %s", err, out)
	}
	os.Remove(o1)
	// A commit with no job and a Top that is gone is refused, not resumed.
	if _, err := m2.Commit(ctx, req); !errors.Is(err, ErrDiskNotFound) {
		t.Errorf("commit of a merged image: %v, want disk_not_found", err)
	}
}

// TestCommitNoSpace: a commit whose base image sits on a filesystem that
// fills up fails with insufficient_storage; the job is dismissed and the
// chain, and the VM, run on as they were.
func TestCommitNoSpace(t *testing.T) {
	s := sandboxed(t)
	mnt := filepath.Join(filepath.Dir(s.Disk), "small")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	data := filepath.Join(mnt, "data.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", data, "64M")
	p := startVM(t, s)
	m := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.AttachDisk(ctx, Disk{ID: "data1", Serial: "d1", Path: data}); err != nil {
		t.Fatal(err)
	}
	o1 := filepath.Join(filepath.Dir(s.Disk), "o1.qcow2") // on the roomy filesystem
	if _, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "data1", Seq: 1, Overlay: o1, Backing: data}}); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, m, "data1", "write -P 0x77 0 8M")
	_, err := m.Commit(ctx, CommitRequest{Disk: "data1", Top: "data1-s1", Base: "data1"})
	if !errors.Is(err, ErrInsufficientStorage) {
		t.Fatalf("commit into a full filesystem: %v, want insufficient_storage", err)
	}
	if got := chainNodes(t, m, "data1"); got != "data1-s1,data1" {
		t.Errorf("chain %s", got)
	}
	if jobs, err := m.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("jobs left: %+v %v", jobs, err)
	}
	if st, err := m.Status(ctx); err != nil || st.Status != "running" {
		t.Errorf("status %+v %v", st, err)
	}
}
