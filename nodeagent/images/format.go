package images

import (
	"bytes"
	"io"
	"os"
)

const (
	formatQCOW2 = "qcow2"
	formatRaw   = "raw"
)

var qcow2Magic = []byte("QFI\xfb")

// detectFormat decides the format from the content alone, and only between
// the two formats we accept: qemu-img is then always told the format, never
// asked to guess it. A URL ending in .qcow2 that serves an HTML error page
// must not become a VM disk, so raw is accepted only when the file carries
// a partition table. A file that starts like a qcow2 image is judged as one
// (and refused if its header is not acceptable), never as raw.
//
// The error never quotes the file: it may be the answer of a service the
// agent was pointed at.
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
	return "", invalidFormat("not a qcow2 image nor a raw disk with a partition table")
}
