package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qemuIO runs a qemu-io command through the HMP on device id's block
// backend, as the guest's I/O would go: the tests write a disk with no
// guest OS. qemu-io reports to QEMU's stderr, so only errors of the HMP
// itself show here; data is checked offline (qemu-io -U).
func qemuIO(t *testing.T, m *Monitor, id, cmd string) string {
	t.Helper()
	// Through the device's own backend (the PCI proxy has none): the
	// device shares no write permission with a second user of its node.
	ret, err := qmpRaw(ctxT(t), m, "human-monitor-command",
		map[string]any{"command-line": "qemu-io -d /machine/peripheral/" + id + `/virtio-backend "` + cmd + `"`})
	if err != nil {
		t.Fatalf("qemu-io %s %s: %v", id, cmd, err)
	}
	var out string
	_ = json.Unmarshal(ret, &out)
	if l := strings.ToLower(out); strings.Contains(l, "failed") || strings.Contains(l, "error") {
		t.Fatalf("qemu-io %s %s: %s", id, cmd, out)
	}
	return out
}

// chainNodes is the node names of a disk's live chain, top first.
func chainNodes(t *testing.T, m *Monitor, id string) string {
	t.Helper()
	chain, err := m.Chain(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, l := range chain {
		n = append(n, l.Node)
	}
	return strings.Join(n, ",")
}

// backingOf reads the backing file an image's header names.
func backingOf(t *testing.T, path string) string {
	t.Helper()
	var info struct {
		Backing string `json:"backing-filename"`
	}
	out := qemuImg(t, "info", "-U", "--output=json", path)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	return info.Backing
}

// TestSnapshotCommitStream: two disks of a running, sandboxed VM are
// snapshot in one transaction, twice, with data written between; then a
// snapshot in the middle of one chain is committed down, another streamed
// up, and the other disk's overlay committed into its active image, all
// live. After each step the chain reads back as expected, the headers name
// the agent's paths, and every byte written is still there.
func TestSnapshotCommitStream(t *testing.T) {
	s := sandboxed(t)
	dir := filepath.Dir(s.Disk)
	base := newImage(t, s, "base.qcow2", "32M")
	data := newImage(t, s, "data.qcow2", "32M", base)
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.AttachDisk(ctx, Disk{ID: "data1", Serial: "d1", Path: data,
		Backing: []Image{{Path: base, Format: "qcow2"}}}); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, m, "data1", "write -P 0x11 0 64k")

	snap := func(seq int, tops map[string]string) {
		t.Helper()
		var disks []SnapshotDisk
		for _, id := range []string{"disk0", "data1"} {
			disks = append(disks, SnapshotDisk{ID: id, Seq: seq, Backing: tops[id],
				Overlay: filepath.Join(dir, id+"-s"+string(rune('0'+seq))+".qcow2")})
		}
		res, err := m.Snapshot(ctx, disks)
		if err != nil {
			t.Fatal(err)
		}
		if res.Pause <= 0 {
			t.Errorf("pause %v", res.Pause)
		}
	}
	s1 := map[string]string{"disk0": filepath.Join(dir, "disk0-s1.qcow2"), "data1": filepath.Join(dir, "data1-s1.qcow2")}
	snap(1, map[string]string{"disk0": s.Disk, "data1": data})
	if got := chainNodes(t, m, "data1"); got != "data1-s1,data1,data1-b0" {
		t.Fatalf("data1 chain after snapshot 1: %s", got)
	}
	if got := chainNodes(t, m, "disk0"); got != "disk0-s1,disk0" {
		t.Fatalf("disk0 chain after snapshot 1: %s", got)
	}
	qemuIO(t, m, "data1", "write -P 0x22 64k 64k")
	snap(2, s1)
	qemuIO(t, m, "data1", "write -P 0x33 128k 64k")
	if got := chainNodes(t, m, "data1"); got != "data1-s2,data1-s1,data1,data1-b0" {
		t.Fatalf("data1 chain after snapshot 2: %s", got)
	}
	s2 := filepath.Join(dir, "data1-s2.qcow2")
	if b := backingOf(t, s2); b != s1["data1"] {
		t.Errorf("overlay %s names backing %q, want %q", s2, b, s1["data1"])
	}
	for _, st := range []string{"running"} {
		if got, err := m.Status(ctx); err != nil || got.Status != st {
			t.Fatalf("status %+v %v, want %s", got, err, st)
		}
	}

	// Snapshot 1 of data1 leaves the middle of the chain: its overlay is
	// committed down into the disk's first image.
	res, err := m.Commit(ctx, CommitRequest{Disk: "data1", Top: "data1-s1", Base: "data1", BasePath: data})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Path != s1["data1"] {
		t.Fatalf("removed %+v", res.Removed)
	}
	if got := chainNodes(t, m, "data1"); got != "data1-s2,data1,data1-b0" {
		t.Fatalf("data1 chain after commit: %s", got)
	}
	if b := backingOf(t, s2); b != data {
		t.Errorf("after commit %s names backing %q, want %q", s2, b, data)
	}
	if strings.Contains(nodeNames(t, m), "data1-s1") {
		t.Errorf("committed node still there: %s", nodeNames(t, m))
	}
	if err := os.Remove(s1["data1"]); err != nil {
		t.Fatal(err)
	}
	// The disk's first image is streamed up into snapshot 2's overlay.
	if _, err := m.Stream(ctx, StreamRequest{Disk: "data1", Into: "data1-s2", Base: "data1-b0", BasePath: base}); err != nil {
		t.Fatal(err)
	}
	if got := chainNodes(t, m, "data1"); got != "data1-s2,data1-b0" {
		t.Fatalf("data1 chain after stream: %s", got)
	}
	if b := backingOf(t, s2); b != base {
		t.Errorf("after stream %s names backing %q, want %q", s2, b, base)
	}
	// disk0's overlay is the active image: an active commit, which
	// reaches ready and is completed.
	if _, err := m.Commit(ctx, CommitRequest{Disk: "disk0", Top: "disk0-s2", Base: "disk0-s1"}); err != nil {
		t.Fatal(err)
	}
	if got := chainNodes(t, m, "disk0"); got != "disk0-s1,disk0" {
		t.Fatalf("disk0 chain after active commit: %s", got)
	}
	// Read back through the chain the headers name, as a restore would.
	qemuIO(t, m, "data1", "flush")
	for _, c := range []string{"read -P 0x11 0 64k", "read -P 0x22 64k 64k", "read -P 0x33 128k 64k"} {
		out, err := runQemuIO("-U", "-r", "-f", "qcow2", "-c", c, s2)
		if err != nil || !strings.Contains(out, "read 65536/65536") || strings.Contains(out, "fail") {
			t.Errorf("%s: %v: %s", c, err, out)
		}
	}
	if jobs, err := m.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("jobs left: %+v %v", jobs, err)
	}
	// The guest never stopped.
	if got, err := m.Status(ctx); err != nil || got.Status != "running" {
		t.Fatalf("status %+v %v", got, err)
	}
	// Shared backing images are never merged into.
	_, err = m.Commit(ctx, CommitRequest{Disk: "data1", Top: "data1-s2", Base: "data1-b0", BasePath: base})
	if !errors.Is(err, ErrInvalidDisk) {
		t.Errorf("commit into a backing image: %v, want invalid_disk", err)
	}
}

// TestSnapshotIsAtomic: when one action of the transaction fails, QEMU
// applies none; Snapshot removes every overlay's node, descriptor and file
// and the VM runs on its previous chains.
func TestSnapshotIsAtomic(t *testing.T) {
	s := sandboxed(t)
	dir := filepath.Dir(s.Disk)
	data := newImage(t, s, "data.qcow2", "32M")
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	// QEMU closes the descriptors of a removed fdset only while running.
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.AttachDisk(ctx, Disk{ID: "data1", Serial: "d1", Path: data}); err != nil {
		t.Fatal(err)
	}
	before, sets := nodeNames(t, m), fdsetCount(t, m)
	beforeTransaction = func(ctx context.Context, m *Monitor) {
		// data1's overlay vanishes: its action fails, disk0's must not apply.
		_ = m.BlockdevDel(ctx, OverlayNode("data1", 1))
	}
	t.Cleanup(func() { beforeTransaction = nil })
	disks := []SnapshotDisk{
		{ID: "disk0", Seq: 1, Backing: s.Disk, Overlay: filepath.Join(dir, "o0.qcow2")},
		{ID: "data1", Seq: 1, Backing: data, Overlay: filepath.Join(dir, "o1.qcow2")},
	}
	_, err := m.Snapshot(ctx, disks)
	if err == nil {
		t.Fatal("snapshot succeeded without one of its overlays")
	}
	beforeTransaction = nil
	if got := chainNodes(t, m, "disk0"); got != "disk0" {
		t.Errorf("disk0 chain %s after a failed transaction", got)
	}
	if after := nodeNames(t, m); after != before {
		t.Errorf("nodes %s, want %s", after, before)
	}
	if n := fdsetCount(t, m); n != sets {
		r, _ := qmpRaw(ctx, m, "query-fdsets", nil)
		t.Errorf("%d fdsets, want %d: %s", n, sets, r)
	}
	for _, d := range disks {
		if _, err := os.Stat(d.Overlay); !os.IsNotExist(err) {
			t.Errorf("overlay %s left behind: %v", d.Overlay, err)
		}
	}
	// And the same snapshot then works.
	if _, err := m.Snapshot(ctx, disks); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotNoSpace: the overlay's filesystem is full. The snapshot
// fails with insufficient_storage, the partial overlay is removed and the
// VM runs on its previous chain.
func TestSnapshotNoSpace(t *testing.T) {
	s := sandboxed(t) // skips unless root, which mount needs too
	mnt := filepath.Join(filepath.Dir(s.Disk), "full")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	// Fill it, leaving less than an empty qcow2 needs.
	_ = exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "fill"), "bs=4k", "count=60").Run()
	p := startVM(t, s)
	m := dial(t, p)
	ctx := ctxT(t)
	if err := m.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(mnt, "o.qcow2")
	_, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "disk0", Seq: 1, Backing: s.Disk, Overlay: overlay}})
	if !errors.Is(err, ErrInsufficientStorage) || Code(err) != "insufficient_storage" {
		t.Fatalf("snapshot on a full filesystem: %v, want insufficient_storage", err)
	}
	if _, err := os.Stat(overlay); !os.IsNotExist(err) {
		t.Errorf("partial overlay left: %v", err)
	}
	if got := chainNodes(t, m, "disk0"); got != "disk0" {
		t.Errorf("chain %s", got)
	}
	if st, err := m.Status(ctx); err != nil || st.Status != "running" {
		t.Errorf("status %+v %v", st, err)
	}
}

func fdsetCount(t *testing.T, m *Monitor) int {
	t.Helper()
	sets, err := m.QueryFDSets(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return len(sets)
}

// TestSnapshotChainDepth: snapshots go up to MaxChainDepth images and no
// further (snapshot_chain_too_deep, nothing changed). The QMP connection
// survives the block queries of a chain that deep, whose replies grow with
// the square of the depth; then one active commit brings it back.
func TestSnapshotChainDepth(t *testing.T) {
	s := testSpec(t)
	p := startVM(t, s)
	m := dial(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	top := s.Disk
	for i := 1; i < MaxChainDepth; i++ {
		o := filepath.Join(filepath.Dir(s.Disk), fmt.Sprintf("o%d.qcow2", i))
		if _, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "disk0", Seq: i, Overlay: o, Backing: top}}); err != nil {
			t.Fatalf("snapshot %d: %v", i, err)
		}
		top = o
	}
	o := filepath.Join(filepath.Dir(s.Disk), "one-too-many.qcow2")
	_, err := m.Snapshot(ctx, []SnapshotDisk{{ID: "disk0", Seq: MaxChainDepth, Overlay: o, Backing: top}})
	if !errors.Is(err, ErrChainTooDeep) {
		t.Fatalf("snapshot past the depth limit: %v, want snapshot_chain_too_deep", err)
	}
	if _, err := os.Stat(o); !os.IsNotExist(err) {
		t.Errorf("refused snapshot left its overlay: %v", err)
	}
	res, err := m.Commit(ctx, CommitRequest{Disk: "disk0", Top: OverlayNode("disk0", MaxChainDepth-1), Base: "disk0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != MaxChainDepth-1 {
		t.Errorf("removed %d images, want %d", len(res.Removed), MaxChainDepth-1)
	}
	if got := chainNodes(t, m, "disk0"); got != "disk0" {
		t.Errorf("chain after commit: %s", got)
	}
}

// runQemuIO runs the qemu-io tool on image files.
func runQemuIO(args ...string) (string, error) {
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	return string(out), err
}
