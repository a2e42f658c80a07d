package images

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
)

// CheckDisk checks, before QEMU opens it, that a VM disk names no file but
// its base, with the base's format, and that the base names none: the
// chain QEMU will open is the disk and, at most, one base. Bases this
// cache writes always pass; a VM created before downloads were normalised
// may be backed by an image with an external data file, and is refused
// here rather than started. It reads headers only (no qemu-img).
func CheckDisk(disk string) error {
	h, err := parseQCOW2Header(disk, math.MaxInt64, true)
	if err != nil {
		return diskError(disk, err)
	}
	if h.BackingFile == "" {
		return nil
	}
	if !filepath.IsAbs(h.BackingFile) || strings.HasPrefix(h.BackingFile, "json:") {
		return newError(CodeExternalReference, fmt.Sprintf("vm disk %s: its backing file is not an absolute path", disk), nil)
	}
	if h.BackingFormat != formatRaw && h.BackingFormat != formatQCOW2 {
		return newError(CodeExternalReference, fmt.Sprintf("vm disk %s: its backing file has no explicit raw or qcow2 format", disk), nil)
	}
	return CheckBase(h.BackingFile, h.BackingFormat)
}

// CheckBase checks the base image QEMU will open under a VM disk, as the
// agent hands it over (the record's base, not the disk header's backing
// name): a qcow2 base must name no file itself, since QEMU would follow
// its backing file or data file by path. A record can name a base that
// the disk's header no longer does, so CheckDisk alone does not cover it.
func CheckBase(base, format string) error {
	switch format {
	case formatRaw:
		return nil
	case formatQCOW2:
		if _, err := checkQCOW2Header(base, math.MaxInt64); err != nil {
			return diskError(base, err)
		}
		return nil
	}
	return newError(CodeExternalReference, fmt.Sprintf("vm base %s: format %q is not raw or qcow2", base, format), nil)
}

// diskError restates a header check's refusal for a disk, not a download.
func diskError(p string, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	msg := strings.TrimPrefix(e.Message, "download refused: ")
	return newError(e.Code, fmt.Sprintf("vm disk %s: %s; recreate the VM from a trusted image", p, msg), e.Err)
}
