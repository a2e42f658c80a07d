package volumes

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/nodeagent/qcow2"
)

const (
	formatQCOW2 = "qcow2"
	formatRaw   = "raw"
	// maxChain bounds how far Stat follows backing files: a header is
	// untrusted (QEMU writes it for the guest), so a loop must end.
	maxChain = 16
)

// reflink makes dst share src's extents (FICLONE): a copy in O(metadata)
// on xfs (reflink=1) and btrfs. It fails with EOPNOTSUPP, EXDEV or EINVAL
// where the filesystem cannot.
func reflink(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}

// probeReflink reports whether dir's filesystem clones files.
func probeReflink(dir string, temp func(string) string) bool {
	a, err := os.CreateTemp(dir, temp("probe-a"))
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	b, err := os.CreateTemp(dir, temp("probe-b"))
	if err != nil {
		return false
	}
	defer os.Remove(b.Name())
	defer b.Close()
	if _, err := a.Write(make([]byte, 4096)); err != nil {
		return false
	}
	return reflink(b, a) == nil
}

// copyFile copies src into dst (a new, empty file): a reflink where the
// filesystem has them, else the data ranges only (SEEK_DATA/SEEK_HOLE with
// copy_file_range), so holes stay holes.
func copyFile(ctx context.Context, dst, src *os.File, canReflink bool) error {
	if canReflink {
		if err := reflink(dst, src); err == nil {
			return nil
		}
	}
	st, err := src.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		for data < hole {
			in, out := data, data
			n, err := unix.CopyFileRange(sfd, &in, dfd, &out, int(min(hole-data, 1<<30)), 0)
			if err != nil {
				return fmt.Errorf("copy_file_range: %w", err)
			}
			if n == 0 {
				return fmt.Errorf("copy_file_range: %w", io.ErrUnexpectedEOF)
			}
			data += int64(n)
		}
		off = hole
	}
	return dst.Truncate(size)
}

// qemuImgRun runs qemu-img; a full disk in its stderr becomes ENOSPC so
// callers classify it like their own writes.
func (p *pool) qemuImgRun(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, p.qemuImg, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "No space left on device") || strings.Contains(msg, "Disk quota exceeded") {
			return fmt.Errorf("qemu-img %s: %s: %w", args[0], msg, syscall.ENOSPC)
		}
		return fmt.Errorf("qemu-img %s: %s: %w", args[0], msg, err)
	}
	return nil
}

// baseInfo checks an image base file and returns its format and virtual
// size. A qcow2 base must not name other files: bases are normalised by
// nodeagent/images, and one that names a backing or data file would let
// its author point QEMU at any file.
func baseInfo(path string) (format string, size int64, err error) {
	if !filepath.IsAbs(path) {
		return "", 0, newError(CodeBaseInvalid, "base "+quote(path)+" is not an absolute path", nil)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return "", 0, newError(CodeBaseInvalid, "base "+quote(path), err)
	}
	if !st.Mode().IsRegular() {
		return "", 0, newError(CodeBaseInvalid, "base "+quote(path)+" is not a regular file", nil)
	}
	isQCOW2, err := hasQCOW2Magic(path)
	if err != nil {
		return "", 0, newError(CodeBaseInvalid, "base "+quote(path), err)
	}
	if !isQCOW2 {
		return formatRaw, st.Size(), nil
	}
	h, err := qcow2.Read(path)
	if err != nil {
		return "", 0, newError(CodeBaseInvalid, "base "+quote(path), err)
	}
	if h.NamesBacking() || h.ExternalData() || h.Encrypted() {
		return "", 0, newError(CodeBaseInvalid, "base "+quote(path)+" names other files or is encrypted", nil)
	}
	return formatQCOW2, int64(h.Size), nil
}

// statFile describes a volume or snapshot file: its virtual size, the
// bytes it occupies, and (for qcow2) its backing chain.
func statFile(path, format string) (virtual, allocated int64, chain []ChainEntry, err error) {
	st, err := os.Lstat(path)
	if err != nil {
		return 0, 0, nil, err
	}
	if !st.Mode().IsRegular() {
		return 0, 0, nil, fmt.Errorf("%s is not a regular file", path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		allocated = sys.Blocks * 512
	}
	if format == formatRaw {
		return st.Size(), allocated, nil, nil
	}
	h, err := readHeader(path)
	if err != nil {
		return 0, 0, nil, err
	}
	return int64(h.Size), allocated, backingChain(path, h), nil
}

// backingChain follows backing file names from h down, nearest first. It
// stops at a name that is not an absolute path to a regular file, at a
// raw file, and after maxChain entries: the headers are untrusted and are
// only read, never followed into devices or FIFOs.
func backingChain(path string, h qcow2.Header) []ChainEntry {
	var chain []ChainEntry
	for range maxChain {
		if h.BackingFile == "" {
			break
		}
		next := h.BackingFile
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(path), next)
		}
		e := ChainEntry{Path: next, Format: h.BackingFormat}
		chain = append(chain, e)
		st, err := os.Lstat(next)
		if err != nil || !st.Mode().IsRegular() || e.Format != formatQCOW2 {
			break
		}
		if h, err = readHeader(next); err != nil {
			break
		}
		path = next
	}
	return chain
}

// headerProbe is how much of a qcow2 file readHeader reads first:
// qemu-img writes the header, its extensions and the backing name in well
// under a KiB, and a pool scan stats every volume, so reading qcow2's
// full 64 KiB window each time would be most of a scan's I/O.
const headerProbe = 4096

// readHeader parses a qcow2 header from its first headerProbe bytes, and
// from qcow2's full window when those do not hold it all.
func readHeader(path string) (qcow2.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return qcow2.Header{}, err
	}
	var buf [headerProbe]byte
	n, err := f.ReadAt(buf[:], 0)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return qcow2.Header{}, err
	}
	if h, err := qcow2.Parse(buf[:n]); err == nil {
		return h, nil
	}
	return qcow2.Read(path)
}

// hasQCOW2Magic tells a qcow2 file from a raw one by its first bytes.
func hasQCOW2Magic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		return false, err
	}
	return binary.BigEndian.Uint32(b[:]) == qcow2.Magic, nil
}

func sizeArg(n int64) string { return strconv.FormatInt(n, 10) }
