package images

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// The qcow2 header fields and extensions this package judges an untrusted
// image by (docs/interop/qcow2.txt in the QEMU sources).
const (
	qcow2V2HeaderLen = 72
	qcow2V3HeaderLen = 104

	qcow2IncompatDataFile   = 1 << 2 // an external data file holds the guest data
	qcow2AutoclearDataRaw   = 1 << 1 // the external data file is a valid raw image
	qcow2ExtEnd             = 0x00000000
	qcow2ExtEncryption      = 0x0537be77
	qcow2ExtDataFile        = 0x44415441
	qcow2MinClusterBits     = 9
	qcow2MaxClusterBits     = 21
	qcow2MaxHeaderExtension = 1 << 21 // the header and its extensions fit in the first cluster
)

// qcow2Header is what checkQCOW2Header learned from an image's header.
type qcow2Header struct {
	Version     uint32
	VirtualSize int64
}

// checkQCOW2Header reads the header of the qcow2 image at p and refuses,
// before any qemu-img sees the file, everything that would make QEMU open a
// path the image itself names: a backing file (a plain path or a json:
// filename, with or without a format) and an external data file. Encrypted
// images (they need a secret we do not have) and a virtual size above
// maxVirtual are refused too.
//
// This is the root check, not qemu-img info: qemu-img's own header parser
// is what we do not want to trust with a hostile file, and some qemu-img
// subcommands (check, convert) open the data file the header names.
func checkQCOW2Header(p string, maxVirtual int64) (qcow2Header, error) {
	f, err := os.Open(p)
	if err != nil {
		return qcow2Header{}, newError(CodeCacheIO, "open image", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return qcow2Header{}, newError(CodeCacheIO, "stat image", err)
	}
	head := make([]byte, qcow2V3HeaderLen)
	if _, err := io.ReadFull(f, head); err != nil {
		return qcow2Header{}, invalidFormat("qcow2 header is truncated")
	}
	be := binary.BigEndian
	if string(head[:4]) != string(qcow2Magic) {
		return qcow2Header{}, invalidFormat("not a qcow2 image")
	}
	h := qcow2Header{Version: be.Uint32(head[4:])}
	if h.Version != 2 && h.Version != 3 {
		return h, invalidFormat("qcow2 version is not 2 or 3")
	}
	backingOffset, backingSize := be.Uint64(head[8:]), be.Uint32(head[16:])
	if backingOffset != 0 || backingSize != 0 {
		return h, newError(CodeExternalReference, "download refused: image names a backing file", nil)
	}
	clusterBits := be.Uint32(head[20:])
	if clusterBits < qcow2MinClusterBits || clusterBits > qcow2MaxClusterBits {
		return h, invalidFormat("qcow2 cluster size out of range")
	}
	size := be.Uint64(head[24:])
	if size > uint64(maxVirtual) {
		return h, newError(CodeTooLarge, fmt.Sprintf("download refused: image virtual size %d bytes exceeds the limit of %d", size, maxVirtual), nil)
	}
	h.VirtualSize = int64(size)
	if be.Uint32(head[32:]) != 0 {
		return h, invalidFormat("encrypted qcow2 images are not supported")
	}
	if h.Version == 2 {
		// Version 2 has no feature bits; its extensions start right after
		// the header.
		return h, checkQCOW2Extensions(f, qcow2V2HeaderLen, int64(1)<<clusterBits, st.Size())
	}
	incompat, autoclear := be.Uint64(head[72:]), be.Uint64(head[88:])
	if incompat&qcow2IncompatDataFile != 0 || autoclear&qcow2AutoclearDataRaw != 0 {
		return h, newError(CodeExternalReference, "download refused: image uses an external data file", nil)
	}
	hlen := be.Uint32(head[100:])
	if hlen < qcow2V3HeaderLen || hlen%8 != 0 {
		return h, invalidFormat("qcow2 header length is invalid")
	}
	return h, checkQCOW2Extensions(f, int64(hlen), int64(1)<<clusterBits, st.Size())
}

// checkQCOW2Extensions walks the header extensions, which QEMU reads from
// the end of the header to the end of the first cluster (there is no
// backing file name to stop at: one was refused already), and refuses a
// data file name or an encryption header wherever they appear, whatever the
// feature bits say.
func checkQCOW2Extensions(f *os.File, off, clusterSize, fileSize int64) error {
	end := min(clusterSize, qcow2MaxHeaderExtension)
	var hdr [8]byte
	for off+8 <= end {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			if off >= fileSize {
				return invalidFormat("qcow2 header extensions are truncated")
			}
			return newError(CodeCacheIO, "read qcow2 header extension", err)
		}
		typ, n := binary.BigEndian.Uint32(hdr[:4]), int64(binary.BigEndian.Uint32(hdr[4:]))
		switch typ {
		case qcow2ExtEnd:
			return nil
		case qcow2ExtDataFile:
			return newError(CodeExternalReference, "download refused: image names an external data file", nil)
		case qcow2ExtEncryption:
			return invalidFormat("encrypted qcow2 images are not supported")
		}
		off += 8 + (n+7)&^7
		if off > end {
			return invalidFormat("qcow2 header extension overruns the first cluster")
		}
	}
	return nil
}

// invalidFormat refuses a download that is not an image we accept.
func invalidFormat(msg string) *Error {
	return newError(CodeInvalidFormat, "download refused: "+msg, nil)
}
