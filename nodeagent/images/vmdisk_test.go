package images

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// baseImage makes a 64 MiB qcow2 base as the cache would describe it.
func baseImage(t *testing.T) Image {
	t.Helper()
	needQemuImg(t)
	p := filepath.Join(t.TempDir(), "base.qcow2")
	if out, err := exec.Command(qemuImgBinary, "create", "-q", "-f", "qcow2", p, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	return Image{Name: "base", Path: p, Format: "qcow2", VirtualSize: 64 << 20}
}

func TestCreateVMDisk(t *testing.T) {
	base := baseImage(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "vm-1.qcow2")

	if err := CreateVMDisk(context.Background(), base, disk, 128<<20); err != nil {
		t.Fatalf("CreateVMDisk: %v", err)
	}
	out, err := exec.Command(qemuImgBinary, "info", "--output=json", disk).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		Format          string `json:"format"`
		VirtualSize     int64  `json:"virtual-size"`
		BackingFilename string `json:"backing-filename"`
		BackingFormat   string `json:"backing-filename-format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != 128<<20 || info.BackingFilename != base.Path || info.BackingFormat != "qcow2" {
		t.Errorf("vm disk info = %+v, want qcow2 of %d backed by %s (qcow2)", info, 128<<20, base.Path)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("disk directory holds %v, want the disk only", names)
	}

	// An existing disk is never replaced.
	before, _ := os.ReadFile(disk)
	err = CreateVMDisk(context.Background(), base, disk, 256<<20)
	wantCode(t, err, CodeDiskExists)
	if after, _ := os.ReadFile(disk); string(after) != string(before) {
		t.Error("existing disk was modified")
	}
}

func TestCreateVMDiskTooSmall(t *testing.T) {
	base := baseImage(t)
	dir := t.TempDir()
	err := CreateVMDisk(context.Background(), base, filepath.Join(dir, "vm.qcow2"), 32<<20)
	wantCode(t, err, CodeDiskSmallerThanImg)
	for _, n := range []int64{32 << 20, 64 << 20} {
		if !strings.Contains(err.Error(), strconv.FormatInt(n, 10)) {
			t.Errorf("err = %v, want it to name %d", err, n)
		}
	}
	assertEmptyDir(t, dir)
}

func TestCreateVMDiskFailureLeavesNothing(t *testing.T) {
	base := baseImage(t)
	base.Path = filepath.Join(t.TempDir(), "missing")
	dir := t.TempDir()
	err := CreateVMDisk(context.Background(), base, filepath.Join(dir, "vm.qcow2"), 128<<20)
	wantCode(t, err, CodeDiskCreateFailed)
	assertEmptyDir(t, dir)
}
