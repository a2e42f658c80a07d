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
	switch h.BackingFormat {
	case formatRaw:
		return nil
	case formatQCOW2:
		if _, err := checkQCOW2Header(h.BackingFile, math.MaxInt64); err != nil {
			return diskError(h.BackingFile, err)
		}
		return nil
	}
	return newError(CodeExternalReference, fmt.Sprintf("vm disk %s: its backing file has no explicit raw or qcow2 format", disk), nil)
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
