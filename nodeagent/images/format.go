package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

const (
	formatQCOW2 = "qcow2"
	formatRaw   = "raw"
)

var qcow2Magic = []byte("QFI\xfb")

// detectFormat decides the format from the content alone. A URL ending in
// .qcow2 that serves an HTML error page must not become a VM disk, so raw
// is accepted only when the file carries a partition table.
func detectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", newError(CodeCacheIO, "open image", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", newError(CodeCacheIO, "stat image", err)
	}
	head := make([]byte, 1024)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", newError(CodeCacheIO, "read image header", err)
	}
	head = head[:n]
	if bytes.HasPrefix(head, qcow2Magic) {
		return formatQCOW2, nil
	}
	if st.Size() > 0 && st.Size()%512 == 0 && n >= 520 {
		mbr := head[510] == 0x55 && head[511] == 0xAA
		gpt := string(head[512:520]) == "EFI PART"
		if mbr || gpt {
			return formatRaw, nil
		}
	}
	return "", newError(CodeInvalidFormat, fmt.Sprintf("not a qcow2 image nor a raw disk with a partition table (starts with %q)", printable(head, 16)), nil)
}

// printable returns up to n leading bytes of b for an error message.
func printable(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '.'
		}
		return r
	}, string(b))
}

// imageInfo is the part of `qemu-img info --output=json` we rely on.
type imageInfo struct {
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
}

// inspect asks qemu-img for the virtual size and refuses a backing file: a
// cached base must stand alone, or an overlay on it could read any host
// file the backing chain names.
func inspect(ctx context.Context, qemuImg, path, format string) (int64, error) {
	cmd := exec.CommandContext(ctx, qemuImg, "info", "--output=json", "-f", format, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, newError(CodeInvalidFormat, "qemu-img info: "+strings.TrimSpace(stderr.String()), err)
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, newError(CodeInvalidFormat, "decode qemu-img info", err)
	}
	if info.BackingFilename != "" {
		return 0, newError(CodeInvalidFormat, fmt.Sprintf("image has a backing file %q", info.BackingFilename), nil)
	}
	if info.VirtualSize <= 0 {
		return 0, newError(CodeInvalidFormat, "qemu-img reports no virtual size", nil)
	}
	return info.VirtualSize, nil
}
