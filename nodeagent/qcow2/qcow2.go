// Package qcow2 parses the header of a qcow2 image and its header
// extensions (docs/interop/qcow2.txt in the QEMU sources), with the bounds
// QEMU itself applies. It judges nothing: what a header may name is the
// caller's policy (nodeagent/images for downloads and VM disks,
// nodeagent/qemu for the disk it hands to QEMU).
//
// Every image the agent parses is untrusted: downloads come from tenants,
// and a VM's overlay is written by QEMU, so after a guest escape its header
// is the attacker's. The parser therefore reads one bounded window and
// follows nothing by path.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	// Magic opens every qcow2 image ("QFI\xfb").
	Magic = 0x514649fb
	// MaxHeaderRead is the window Parse looks at: the header, its
	// extensions and the backing file name must all lie within it. QEMU
	// allows them the first cluster (up to 2 MiB); qemu-img writes them in
	// well under a KiB, so an image needing more is refused, not read.
	MaxHeaderRead = 64 << 10
	// MaxBackingName is QEMU's limit on the backing file name.
	MaxBackingName = 1023
	// MaxBackingFormat bounds the backing format extension: QEMU refuses
	// one of 16 bytes or more (its backing_format buffer).
	MaxBackingFormat = 15

	v2HeaderLen    = 72
	v3HeaderLen    = 104
	minClusterBits = 9
	maxClusterBits = 21

	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extDataFile      = 0x44415441
	extEncryption    = 0x0537be77

	// IncompatDataFile (incompatible feature bit 2): the guest data lives
	// in an external data file, which QEMU opens by the name the
	// data-file extension gives unless told another.
	IncompatDataFile = 1 << 2
	// AutoclearDataFileRaw (autoclear feature bit 1): the external data
	// file is a raw image, guest offset = host file offset.
	AutoclearDataFileRaw = 1 << 1
)

// ErrInvalid wraps every reason a window is not a qcow2 header this
// package accepts; any other error from Read is an I/O failure.
var ErrInvalid = errors.New("qcow2: invalid header")

// Header is a qcow2 header and the extensions QEMU would read from it.
// Names are the bytes the image holds, untrimmed: compare them exactly, so
// a name with a NUL in it never passes for "raw" or "qcow2".
type Header struct {
	Version     uint32
	ClusterBits uint32
	Size        uint64 // virtual size in bytes
	// CryptMethod is the header's encryption method (0: none, 1: AES,
	// 2: LUKS).
	CryptMethod uint32
	// Feature bits; version 3 only (zero for version 2).
	Incompatible, Compatible, Autoclear uint64
	// HeaderLength is where the extensions start.
	HeaderLength uint32

	// BackingOffset and BackingSize are the header's backing file fields;
	// BackingFile is the name they point at.
	BackingOffset uint64
	BackingSize   uint32
	BackingFile   string
	// BackingFormat is the backing format extension's value, if any.
	BackingFormat string
	// DataFileExtension is set when the data-file extension is present,
	// whatever its length or the feature bits say; DataFile is its value.
	DataFileExtension bool
	DataFile          string
	// EncryptionExtension is set when the full disk encryption header
	// extension is present.
	EncryptionExtension bool
}

// NamesBacking reports whether the header's backing file fields are set at
// all, i.e. whether QEMU would look for a backing file.
func (h Header) NamesBacking() bool { return h.BackingOffset != 0 || h.BackingSize != 0 }

// ExternalData reports incompatible feature bit 2: QEMU keeps the guest
// data in another file.
func (h Header) ExternalData() bool { return h.Incompatible&IncompatDataFile != 0 }

// RawExternalData reports autoclear feature bit 1.
func (h Header) RawExternalData() bool { return h.Autoclear&AutoclearDataFileRaw != 0 }

// Encrypted reports an encrypted image, by the header's method or by the
// encryption extension.
func (h Header) Encrypted() bool { return h.CryptMethod != 0 || h.EncryptionExtension }

// Read parses the header of the image at path from its first
// MaxHeaderRead bytes. Errors wrapping ErrInvalid are about the content;
// others are I/O.
func Read(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, fmt.Errorf("qcow2: read header: %w", err)
	}
	defer f.Close()
	buf := make([]byte, MaxHeaderRead)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Header{}, fmt.Errorf("qcow2: read header of %s: %w", path, err)
	}
	return Parse(buf[:n])
}

// Parse parses a qcow2 header from the first bytes of an image; only the
// first MaxHeaderRead bytes are looked at. On error the Header holds the
// fields decoded before the fault (zero for the rest), so a caller may
// still tell which refusal to report; it never describes a valid image.
func Parse(b []byte) (Header, error) {
	var h Header
	bad := func(format string, args ...any) (Header, error) {
		return h, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if len(b) > MaxHeaderRead {
		b = b[:MaxHeaderRead]
	}
	be := binary.BigEndian
	// Version 2 needs only 72 bytes, but no real image is shorter than a
	// cluster: reading a full version 3 header for both keeps one path.
	if len(b) < 4 || be.Uint32(b) != Magic {
		return bad("no qcow2 magic")
	}
	if len(b) < v3HeaderLen {
		return bad("header is truncated")
	}
	h.Version = be.Uint32(b[4:])
	if h.Version != 2 && h.Version != 3 {
		return bad("version %d is not 2 or 3", h.Version)
	}
	h.ClusterBits = be.Uint32(b[20:])
	if h.ClusterBits < minClusterBits || h.ClusterBits > maxClusterBits {
		return bad("cluster bits %d out of range", h.ClusterBits)
	}
	h.BackingOffset, h.BackingSize = be.Uint64(b[8:]), be.Uint32(b[16:])
	h.Size = be.Uint64(b[24:])
	h.CryptMethod = be.Uint32(b[32:])
	h.HeaderLength = v2HeaderLen
	if h.Version == 3 {
		h.Incompatible, h.Compatible, h.Autoclear = be.Uint64(b[72:]), be.Uint64(b[80:]), be.Uint64(b[88:])
		h.HeaderLength = be.Uint32(b[100:])
		if h.HeaderLength < v3HeaderLen || h.HeaderLength%8 != 0 {
			return bad("header length %d", h.HeaderLength)
		}
	}

	// QEMU reads the extensions up to the backing file name, or to the end
	// of the first cluster; the window bounds both.
	end := min(uint64(len(b)), uint64(1)<<h.ClusterBits)
	if h.NamesBacking() {
		if h.BackingOffset == 0 || h.BackingSize == 0 || h.BackingSize > MaxBackingName {
			return bad("backing file name of %d bytes at offset %d", h.BackingSize, h.BackingOffset)
		}
		if h.BackingOffset > end || uint64(h.BackingSize) > end-h.BackingOffset {
			return bad("backing file name outside the first cluster")
		}
		end = h.BackingOffset
	}
	// Unlike QEMU, an end-of-extensions marker is required: qemu-img always
	// writes one, and a header without it is not one we know how to read.
	off := uint64(h.HeaderLength)
	for {
		if off > end || end-off < 8 {
			return bad("header extensions have no end before offset %d", end)
		}
		typ, n := be.Uint32(b[off:]), uint64(be.Uint32(b[off+4:]))
		off += 8
		if typ == extEnd {
			break
		}
		if n > end-off {
			return bad("header extension %#x of %d bytes runs past offset %d", typ, n, end)
		}
		data := b[off : off+n]
		switch typ {
		case extBackingFormat:
			if n > MaxBackingFormat {
				return bad("backing format of %d bytes", n)
			}
			h.BackingFormat = string(data)
		case extDataFile:
			h.DataFileExtension, h.DataFile = true, string(data)
		case extEncryption:
			h.EncryptionExtension = true
		}
		off += (n + 7) &^ 7
	}
	if h.NamesBacking() {
		h.BackingFile = string(b[h.BackingOffset : h.BackingOffset+uint64(h.BackingSize)])
	}
	return h, nil
}
