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
	qcow2ExtBackingFormat   = 0xe2792aca
	qcow2ExtDataFile        = 0x44415441
	qcow2MinClusterBits     = 9
	qcow2MaxClusterBits     = 21
	qcow2MaxHeaderExtension = 1 << 21 // the header and its extensions fit in the first cluster
)

// qcow2Header is what parseQCOW2Header learned from an image's header.
type qcow2Header struct {
	Version     uint32
	VirtualSize int64
	// Backing and BackingFormat are the backing file and its format as the
	// header names them; only parsed when the caller allows a backing file.
	Backing, BackingFormat string
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
	return parseQCOW2Header(p, maxVirtual, false)
}

// parseQCOW2Header is checkQCOW2Header; with allowBacking a backing file
// is read instead of refused (a VM disk's overlay has one: its base).
func parseQCOW2Header(p string, maxVirtual int64, allowBacking bool) (qcow2Header, error) {
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
	clusterBits := be.Uint32(head[20:])
	if clusterBits < qcow2MinClusterBits || clusterBits > qcow2MaxClusterBits {
		return h, invalidFormat("qcow2 cluster size out of range")
	}
	clusterSize := int64(1) << clusterBits
	backingOffset, backingSize := int64(be.Uint64(head[8:])), int64(be.Uint32(head[16:]))
	extEnd := clusterSize
	if backingOffset != 0 || backingSize != 0 {
		if !allowBacking {
			return h, newError(CodeExternalReference, "download refused: image names a backing file", nil)
		}
		if backingOffset <= 0 || backingSize <= 0 || backingSize > 1023 || backingOffset+backingSize > clusterSize {
			return h, invalidFormat("qcow2 backing file name out of bounds")
		}
		name := make([]byte, backingSize)
		if _, err := f.ReadAt(name, backingOffset); err != nil {
			return h, invalidFormat("qcow2 backing file name is truncated")
		}
		h.Backing = string(name)
		// QEMU reads the extensions up to the backing file name.
		extEnd = backingOffset
	}
	size := be.Uint64(head[24:])
	if size > uint64(maxVirtual) {
		return h, newError(CodeTooLarge, fmt.Sprintf("download refused: image virtual size %d bytes exceeds the limit of %d", size, maxVirtual), nil)
	}
	h.VirtualSize = int64(size)
	if be.Uint32(head[32:]) != 0 {
		return h, invalidFormat("encrypted qcow2 images are not supported")
	}
	extStart := int64(qcow2V2HeaderLen) // version 2: no feature bits
	if h.Version == 3 {
		incompat, autoclear := be.Uint64(head[72:]), be.Uint64(head[88:])
		if incompat&qcow2IncompatDataFile != 0 || autoclear&qcow2AutoclearDataRaw != 0 {
			return h, newError(CodeExternalReference, "download refused: image uses an external data file", nil)
		}
		hlen := be.Uint32(head[100:])
		if hlen < qcow2V3HeaderLen || hlen%8 != 0 {
			return h, invalidFormat("qcow2 header length is invalid")
		}
		extStart = int64(hlen)
	}
	h.BackingFormat, err = checkQCOW2Extensions(f, extStart, extEnd, st.Size())
	return h, err
}

// checkQCOW2Extensions walks the header extensions from off to end, where
// QEMU reads them, and refuses a data file name or an encryption header
// wherever they appear, whatever the feature bits say. It returns the
// backing format extension's value, if any.
func checkQCOW2Extensions(f *os.File, off, end, fileSize int64) (string, error) {
	end = min(end, qcow2MaxHeaderExtension)
	var hdr [8]byte
	backingFormat := ""
	for off+8 <= end {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			if off >= fileSize {
				return "", invalidFormat("qcow2 header extensions are truncated")
			}
			return "", newError(CodeCacheIO, "read qcow2 header extension", err)
		}
		typ, n := binary.BigEndian.Uint32(hdr[:4]), int64(binary.BigEndian.Uint32(hdr[4:]))
		switch typ {
		case qcow2ExtEnd:
			return backingFormat, nil
		case qcow2ExtDataFile:
			return "", newError(CodeExternalReference, "download refused: image names an external data file", nil)
		case qcow2ExtEncryption:
			return "", invalidFormat("encrypted qcow2 images are not supported")
		case qcow2ExtBackingFormat:
			if n > 0 && n < 64 && off+8+n <= end {
				b := make([]byte, n)
				if _, err := f.ReadAt(b, off+8); err == nil {
					backingFormat = string(b)
				}
			}
		}
		off += 8 + (n+7)&^7
		if off > end {
			return "", invalidFormat("qcow2 header extension overruns the first cluster")
		}
	}
	return backingFormat, nil
}

// invalidFormat refuses a download that is not an image we accept.
func invalidFormat(msg string) *Error {
	return newError(CodeInvalidFormat, "download refused: "+msg, nil)
}
