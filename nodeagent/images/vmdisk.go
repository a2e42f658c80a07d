package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// qemuImgBinary is the qemu-img looked up on PATH.
const qemuImgBinary = "qemu-img"

// CreateVMDisk creates at path a qcow2 disk of sizeBytes backed by base.
// The disk appears complete or not at all, and an existing file at path is
// never replaced: it may be a VM's data.
func CreateVMDisk(ctx context.Context, base Image, path string, sizeBytes int64) error {
	return createVMDisk(ctx, qemuImgBinary, base, path, sizeBytes)
}

// CreateVMDisk is the package's CreateVMDisk for a base of this cache:
// no Delete or eviction removes the base while the disk is being made,
// and the base's last use is recorded (the LRU order of eviction).
func (c *Cache) CreateVMDisk(ctx context.Context, base Image, path string, sizeBytes int64) error {
	c.gcMu.RLock()
	defer c.gcMu.RUnlock()
	if _, err := os.Stat(base.Path); err != nil {
		return newError(CodeNotPresent, fmt.Sprintf("image %s (sha256 %s) was removed from pool %s", base.Name, base.SHA256, c.pool), err)
	}
	if isDigest(base.SHA256) {
		// Only LRU precision is lost if this fails.
		_ = c.MarkUsed(base.SHA256)
	}
	return createVMDisk(ctx, c.qemuImg, base, path, sizeBytes)
}

func createVMDisk(ctx context.Context, qemuImg string, base Image, path string, sizeBytes int64) error {
	// Bases are normalised qcow2 files; the VM disk names that format in
	// its header (-F), so QEMU never probes the base's format.
	if base.Format != formatQCOW2 {
		return newError(CodeInvalidFormat, fmt.Sprintf("base %s has format %q, want qcow2", base.Name, base.Format), nil)
	}
	if sizeBytes < base.VirtualSize {
		return newError(CodeDiskSmallerThanImg, fmt.Sprintf("disk of %d bytes is smaller than image %s of %d bytes", sizeBytes, base.Name, base.VirtualSize), nil)
	}
	// qemu-img resolves a relative backing path against the VM disk's
	// directory, not ours.
	backing, err := filepath.Abs(base.Path)
	if err != nil {
		return newError(CodeDiskCreateFailed, "resolve base path", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return newError(CodeDiskExists, path+" already exists", nil)
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return newError(CodeDiskCreateFailed, "create temporary disk", err)
	}
	tmp.Close()
	tmpName := tmp.Name()
	defer os.Remove(tmpName)

	cmd := exec.CommandContext(ctx, qemuImg, "create", "-q", "-f", formatQCOW2,
		"-F", base.Format, "-b", backing, tmpName, strconv.FormatInt(sizeBytes, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("images: create vm disk %s: %w", path, ctx.Err())
		}
		return newError(CodeDiskCreateFailed, "qemu-img create: "+strings.TrimSpace(stderr.String()), err)
	}
	if err := syncFile(tmpName); err != nil {
		return newError(CodeDiskCreateFailed, "sync disk", err)
	}
	// A hard link commits like rename but fails instead of replacing a
	// disk that appeared meanwhile.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return newError(CodeDiskExists, path+" already exists", nil)
		}
		return newError(CodeDiskCreateFailed, "commit disk", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return newError(CodeDiskCreateFailed, "sync disk directory", err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
