package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// imageInfo is the part of `qemu-img info --output=json` we judge by.
type imageInfo struct {
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	Encrypted           bool   `json:"encrypted"`
	FormatSpecific      struct {
		Data struct {
			DataFile    string `json:"data-file"`
			DataFileRaw bool   `json:"data-file-raw"`
			Corrupt     bool   `json:"corrupt"`
		} `json:"data"`
	} `json:"format-specific"`
}

// checkInfo refuses what must never reach QEMU, as qemu-img reports it: a
// second opinion after checkQCOW2Header, not a replacement for it.
func (info imageInfo) check(format string, maxVirtual int64) error {
	d := info.FormatSpecific.Data
	switch {
	case info.Format != format:
		return invalidFormat(fmt.Sprintf("qemu-img reads the image as %q, not %s", info.Format, format))
	case info.BackingFilename != "" || info.FullBackingFilename != "":
		return newError(CodeExternalReference, "download refused: image names a backing file", nil)
	case d.DataFile != "" || d.DataFileRaw:
		return newError(CodeExternalReference, "download refused: image uses an external data file", nil)
	case info.Encrypted:
		return invalidFormat("encrypted images are not supported")
	case d.Corrupt:
		return newError(CodeCorrupt, "download refused: image is marked corrupt", nil)
	case info.VirtualSize <= 0:
		return invalidFormat("qemu-img reports no virtual size")
	case info.VirtualSize > maxVirtual:
		return newError(CodeTooLarge, fmt.Sprintf("download refused: image virtual size %d bytes exceeds the limit of %d", info.VirtualSize, maxVirtual), nil)
	}
	return nil
}

// imageOpts names the image at p for qemu-img's --image-opts: the format
// and the protocol are ours to say, never probed from the file or its name.
func imageOpts(format, p string) string {
	// In QEMU's key=value syntax a comma is escaped by doubling it.
	return "driver=" + format + ",file.driver=file,file.filename=" + strings.ReplaceAll(p, ",", ",,")
}

// qemuImgRun runs qemu-img and returns its stdout and exit code. stderr is
// kept out of errors: it may quote the image's own bytes.
func (c *Cache) qemuImgRun(ctx context.Context, args ...string) ([]byte, int, error) {
	cmd := exec.CommandContext(ctx, c.qemuImg, args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, -1, ctx.Err()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return stdout.Bytes(), exit.ExitCode(), nil
	}
	if err != nil {
		return nil, -1, newError(CodeCacheIO, "run qemu-img", err)
	}
	return stdout.Bytes(), 0, nil
}

// info runs qemu-img info on an image whose format is already decided.
// qemu-img info (unlike check and convert) does not open an external data
// file (TestNormaliseNeverOpensNamedFiles holds it to that), and the
// images it sees here passed checkQCOW2Header anyway.
func (c *Cache) info(ctx context.Context, format, p string) (imageInfo, error) {
	out, code, err := c.qemuImgRun(ctx, "info", "--output=json", "--image-opts", imageOpts(format, p))
	if err != nil {
		return imageInfo{}, err
	}
	if code != 0 {
		return imageInfo{}, invalidFormat(fmt.Sprintf("qemu-img cannot read the image as %s", format))
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return imageInfo{}, invalidFormat("cannot decode qemu-img info")
	}
	return info, nil
}

// checkConsistent runs qemu-img check on a qcow2 image: a truncated or
// inconsistent file converts without an error (missing clusters read as
// zeros) and must be refused here. Leaked clusters are harmless.
func (c *Cache) checkConsistent(ctx context.Context, p string) error {
	out, code, err := c.qemuImgRun(ctx, "check", "--output=json", "--image-opts", imageOpts(formatQCOW2, p))
	if err != nil {
		return err
	}
	var res struct {
		Corruptions int `json:"corruptions"`
		CheckErrors int `json:"check-errors"`
	}
	_ = json.Unmarshal(out, &res)
	switch {
	case code == 0 || code == 3: // 3: leaks only
		if res.Corruptions == 0 && res.CheckErrors == 0 {
			return nil
		}
	}
	return newError(CodeCorrupt, fmt.Sprintf("download refused: qemu-img check finds the image inconsistent (%d corruptions, %d errors, exit %d)", res.Corruptions, res.CheckErrors, code), nil)
}

// measure returns the bytes the converted image will take.
func (c *Cache) measure(ctx context.Context, format, p string) (int64, error) {
	out, code, err := c.qemuImgRun(ctx, "measure", "--output=json", "-O", formatQCOW2, "--image-opts", imageOpts(format, p))
	if err != nil {
		return 0, err
	}
	var res struct {
		Required int64 `json:"required"`
	}
	if code != 0 || json.Unmarshal(out, &res) != nil || res.Required <= 0 {
		return 0, invalidFormat("qemu-img cannot measure the image")
	}
	return res.Required, nil
}

// normalise judges the downloaded file src and, if it is acceptable,
// writes it as a standalone qcow2 base named digest. Before qemu-img is run
// on src at all, the format is decided from the content and a qcow2
// header that names any other file is refused; qemu-img is then told the
// format and the protocol explicitly. The copy is checked again before it
// is committed, so nothing the user crafted reaches QEMU's block layer
// except guest data inside a file we wrote.
func (c *Cache) normalise(ctx context.Context, src, digest string) error {
	format, err := detectFormat(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return newError(CodeCacheIO, "stat download", err)
	}
	vsize := st.Size()
	if format == formatQCOW2 {
		h, err := checkQCOW2Header(src, c.maxSize)
		if err != nil {
			return err
		}
		vsize = h.VirtualSize
	} else if vsize > c.maxSize {
		return newError(CodeTooLarge, fmt.Sprintf("download refused: image virtual size %d bytes exceeds the limit of %d", vsize, c.maxSize), nil)
	}
	info, err := c.info(ctx, format, src)
	if err != nil {
		return err
	}
	if err := info.check(format, c.maxSize); err != nil {
		return err
	}
	if info.VirtualSize != vsize {
		return invalidFormat(fmt.Sprintf("qemu-img reads a virtual size of %d bytes, the header says %d", info.VirtualSize, vsize))
	}
	if format == formatQCOW2 {
		if err := c.checkConsistent(ctx, src); err != nil {
			return err
		}
	}
	need, err := c.measure(ctx, format, src)
	if err != nil {
		return err
	}
	free, err := c.freeSpace(c.dir)
	if err != nil {
		return newError(CodeCacheIO, "free space of pool", err)
	}
	if need > free {
		return newError(CodeInsufficientStorage, fmt.Sprintf("download refused: the normalised image needs %d bytes, pool %s has %d free", need, c.pool, free), nil)
	}

	tmp, err := os.CreateTemp(filepath.Join(c.dir, dirTmp), digest+"-*.qcow2")
	if err != nil {
		return newError(CodeCacheIO, "create conversion target", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// No -B and no -o backing_file or data_file: the result stands alone.
	_, code, err := c.qemuImgRun(ctx, "convert", "-q", "--image-opts", imageOpts(format, src),
		"-O", formatQCOW2, "-o", "compat=1.1", tmp.Name())
	if err != nil {
		return err
	}
	if code != 0 {
		// The pool may have filled up under the conversion (the check
		// above is only a forecast).
		if free, err := c.freeSpace(c.dir); err == nil && free < need {
			return newError(CodeInsufficientStorage, fmt.Sprintf("conversion failed: pool %s has %d bytes free, the image needs %d", c.pool, free, need), nil)
		}
		return invalidFormat(fmt.Sprintf("qemu-img convert failed (exit %d)", code))
	}
	if err := c.verifyBase(ctx, tmp.Name(), info.VirtualSize); err != nil {
		return err
	}
	if err := syncFile(tmp.Name()); err != nil {
		return newError(CodeCacheIO, "sync base", err)
	}
	// A hard link commits like rename but keeps a base another flight
	// committed meanwhile (same content): VM disks may already name it.
	if err := os.Link(tmp.Name(), c.basePath(digest)); err != nil && !errors.Is(err, fs.ErrExist) {
		return newError(CodeCacheIO, "commit base", err)
	}
	if err := syncDir(filepath.Join(c.dir, dirBases)); err != nil {
		return newError(CodeCacheIO, "sync bases directory", err)
	}
	return nil
}

// verifyBase checks a conversion's output as strictly as a download: our
// own qemu-img wrote it, but a base is what every VM of it will trust.
func (c *Cache) verifyBase(ctx context.Context, p string, vsize int64) error {
	if _, err := checkQCOW2Header(p, c.maxSize); err != nil {
		return fmt.Errorf("images: converted image: %w", err)
	}
	info, err := c.info(ctx, formatQCOW2, p)
	if err != nil {
		return err
	}
	if err := info.check(formatQCOW2, c.maxSize); err != nil {
		return err
	}
	if info.VirtualSize != vsize {
		return invalidFormat(fmt.Sprintf("converted image has virtual size %d, want %d", info.VirtualSize, vsize))
	}
	return c.checkConsistent(ctx, p)
}
