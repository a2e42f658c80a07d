package vmactor

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/qcow2"
)

// TestMigrationRewritesRecords: after the image cache migrates a legacy
// base, the VM's record names the new base (what QEMU is started with),
// as does its disk's header; a record of another disk is left alone.
func TestMigrationRewritesRecords(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	pool := t.TempDir()
	cacheDir, diskDir, stateDir := filepath.Join(pool, "images"), filepath.Join(pool, "vms"), filepath.Join(t.TempDir(), "vms")
	for _, d := range []string{cacheDir, diskDir} {
		os.MkdirAll(d, 0o755)
	}
	raw := make([]byte, 1<<20)
	rand.Read(raw)
	raw[510], raw[511] = 0x55, 0xAA
	legacy := filepath.Join(cacheDir, "debian.img")
	os.WriteFile(legacy, raw, 0o644)

	rec := func(id, disk, base string) {
		r := &record{ID: id, Name: id, Disk: disk, Base: base, BaseFormat: "raw", Phase: messages.PhaseStopped}
		if err := r.save(filepath.Join(stateDir, id)); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(diskDir, "vm1.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", legacy, disk, "2M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	rec("vm1", disk, legacy)
	rec("vm2", filepath.Join(diskDir, "vm2.qcow2"), "/elsewhere/base.img")

	cache, err := images.New("default", cacheDir, images.Options{DiskDirs: []string{diskDir}})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	rep, err := cache.MigrateLegacy(context.Background(), RebaseRecords(stateDir))
	if err != nil || len(rep.Rebased) != 1 {
		t.Fatalf("migrate: %+v, %v", rep, err)
	}
	inv, err := cache.Inventory(context.Background())
	if err != nil || len(inv) != 1 {
		t.Fatalf("inventory %+v, %v", inv, err)
	}
	newBase := inv[0].Path
	r1, _ := loadRecord(filepath.Join(stateDir, "vm1"))
	if r1.Base != newBase || r1.BaseFormat != "qcow2" {
		t.Errorf("record of vm1 names %s (%s), want %s (qcow2)", r1.Base, r1.BaseFormat, newBase)
	}
	if h, err := qcow2.Read(disk); err != nil || h.BackingFile != newBase || h.BackingFormat != "qcow2" {
		t.Errorf("disk header backing %q (%q), %v", h.BackingFile, h.BackingFormat, err)
	}
	if err := images.CheckDisk(disk); err != nil {
		t.Errorf("CheckDisk after migration: %v", err)
	}
	r2, _ := loadRecord(filepath.Join(stateDir, "vm2"))
	if r2.Base != "/elsewhere/base.img" {
		t.Errorf("record of vm2 changed to %s", r2.Base)
	}
	if _, err := os.Stat(legacy); err == nil {
		t.Error("legacy file left")
	}
}

// TestCreateWithPullNeverNeedsACachedImage: a create whose spec says Never
// fails with image_not_present, without a request to the origin, until the
// image is cached; then it creates the disk on the cached base.
func TestCreateWithPullNeverNeedsACachedImage(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("never")
	vm.Spec.Image.PullPolicy = messages.PullNever
	vm.Spec.PowerState = messages.PowerStopped
	task := f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	if task.State != messages.TaskFailed || task.Error == nil || task.Error.Code != "image_not_present" {
		t.Fatalf("create with Never on an empty cache: %+v", task)
	}
	if _, err := f.cfg.Images.Ensure(context.Background(), f.url, f.sha, nil); err != nil {
		t.Fatal(err)
	}
	vm.ID = messages.NewID()
	task = f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm))
	if task.State != messages.TaskSuccess {
		t.Fatalf("create with Never on a cached image: %+v", task.Error)
	}
}
