package qemu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// QCOW2Header is what the agent needs to know of a qcow2 header before
// handing the file to QEMU. A VM's overlay is written by QEMU, so after a
// guest escape its header is attacker-controlled: it is read with fixed
// bounds, and nothing in it is followed by path.
type QCOW2Header struct {
	Version       uint32
	ClusterBits   uint32
	Size          uint64 // virtual size in bytes
	BackingFile   string
	BackingFormat string // from the backing-format extension, if any
	// ExternalData is set when the image keeps its data in another file
	// (incompatible feature bit 2); DataFile is that file's name.
	ExternalData bool
	DataFile     string
}

// qcow2 layout constants (docs/interop/qcow2.txt in QEMU).
const (
	qcow2Magic          = 0x514649fb // "QFI\xfb"
	qcow2V2HeaderLen    = 72
	qcow2V3HeaderLen    = 104
	qcow2MaxBackingName = 1023 // QEMU's own limit
	qcow2MaxHeaderRead  = 64 << 10
	extEnd              = 0x00000000
	extBackingFormat    = 0xe2792aca
	extDataFile         = 0x44415441
	featureExternalData = 1 << 2
)

// ErrNotQCOW2 wraps every reason a file is not a well-formed qcow2 header.
var ErrNotQCOW2 = errors.New("qemu: not a valid qcow2 header")

// ReadQCOW2Header reads the header of the qcow2 image at path.
func ReadQCOW2Header(path string) (QCOW2Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return QCOW2Header{}, fmt.Errorf("qemu: read qcow2 header: %w", err)
	}
	defer f.Close()
	buf := make([]byte, qcow2MaxHeaderRead)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return QCOW2Header{}, fmt.Errorf("qemu: read qcow2 header %s: %w", path, err)
	}
	h, err := ParseQCOW2Header(buf[:n])
	if err != nil {
		return h, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// ParseQCOW2Header parses a qcow2 header from the first bytes of an image
// (up to 64 KiB are looked at). The backing file name must lie within b.
func ParseQCOW2Header(b []byte) (QCOW2Header, error) {
	bad := func(format string, args ...any) (QCOW2Header, error) {
		return QCOW2Header{}, fmt.Errorf("%w: %s", ErrNotQCOW2, fmt.Sprintf(format, args...))
	}
	if len(b) > qcow2MaxHeaderRead {
		b = b[:qcow2MaxHeaderRead]
	}
	be := binary.BigEndian
	if len(b) < qcow2V2HeaderLen || be.Uint32(b) != qcow2Magic {
		return bad("no qcow2 magic")
	}
	h := QCOW2Header{Version: be.Uint32(b[4:]), ClusterBits: be.Uint32(b[20:]), Size: be.Uint64(b[24:])}
	if h.Version != 2 && h.Version != 3 {
		return bad("version %d", h.Version)
	}
	if h.ClusterBits < 9 || h.ClusterBits > 21 {
		return bad("cluster bits %d", h.ClusterBits)
	}
	extStart := uint64(qcow2V2HeaderLen)
	if h.Version == 3 {
		if len(b) < qcow2V3HeaderLen {
			return bad("short v3 header")
		}
		h.ExternalData = be.Uint64(b[72:])&featureExternalData != 0
		hl := uint64(be.Uint32(b[100:]))
		if hl < qcow2V3HeaderLen || hl%8 != 0 {
			return bad("header length %d", hl)
		}
		extStart = hl
	}
	// Extensions live in the first cluster, ended by type 0.
	limit := min(uint64(len(b)), uint64(1)<<h.ClusterBits)
	off := extStart
	for {
		if off+8 > limit {
			return bad("header extensions run past the first cluster")
		}
		typ, n := be.Uint32(b[off:]), uint64(be.Uint32(b[off+4:]))
		off += 8
		if typ == extEnd {
			break
		}
		if n > limit-off {
			return bad("header extension %#x of %d bytes runs past the first cluster", typ, n)
		}
		data := b[off : off+n]
		switch typ {
		case extBackingFormat:
			h.BackingFormat = string(bytes.TrimRight(data, "\x00"))
		case extDataFile:
			h.DataFile = string(bytes.TrimRight(data, "\x00"))
		}
		off += (n + 7) &^ 7
	}
	boff, bsize := be.Uint64(b[8:]), uint64(be.Uint32(b[16:]))
	if boff != 0 {
		if bsize == 0 || bsize > qcow2MaxBackingName {
			return bad("backing file name of %d bytes", bsize)
		}
		if boff > uint64(len(b)) || bsize > uint64(len(b))-boff {
			return bad("backing file name outside the header")
		}
		h.BackingFile = string(b[boff : boff+bsize])
	}
	return h, nil
}
