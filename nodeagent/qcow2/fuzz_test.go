package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// image is what build lays out: the fields of a Header a test sets.
type image struct {
	version, clusterBits, crypt uint32
	size                        uint64
	incompat, compat, autoclear uint64
	backing, format, dataFile   string
	dataFileExt, encryptionExt  bool
	padTo                       int
}

// build writes a qcow2 header as qemu-img lays it out: header, extensions,
// end marker, then the backing file name.
func build(m image) []byte {
	be := binary.BigEndian
	hl := uint32(v2HeaderLen)
	if m.version == 3 {
		hl = v3HeaderLen
	}
	b := make([]byte, hl)
	be.PutUint32(b, Magic)
	be.PutUint32(b[4:], m.version)
	be.PutUint32(b[20:], m.clusterBits)
	be.PutUint64(b[24:], m.size)
	be.PutUint32(b[32:], m.crypt)
	if m.version == 3 {
		be.PutUint64(b[72:], m.incompat)
		be.PutUint64(b[80:], m.compat)
		be.PutUint64(b[88:], m.autoclear)
		be.PutUint32(b[96:], 4)
		be.PutUint32(b[100:], hl)
	}
	ext := func(typ uint32, data string) {
		var h [8]byte
		be.PutUint32(h[:], typ)
		be.PutUint32(h[4:], uint32(len(data)))
		b = append(b, h[:]...)
		b = append(b, data...)
		b = append(b, make([]byte, (8-len(data)%8)%8)...)
	}
	if m.format != "" {
		ext(extBackingFormat, m.format)
	}
	if m.dataFileExt {
		ext(extDataFile, m.dataFile)
	}
	if m.encryptionExt {
		ext(extEncryption, "\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00")
	}
	b = append(b, make([]byte, 8)...) // end of extensions
	if m.backing != "" {
		be.PutUint64(b[8:], uint64(len(b)))
		be.PutUint32(b[16:], uint32(len(m.backing)))
		b = append(b, m.backing...)
	}
	if len(b) < max(m.padTo, v3HeaderLen) {
		b = append(b, make([]byte, max(m.padTo, v3HeaderLen)-len(b))...)
	}
	return b
}

// FuzzQCOW2Header: the parser never panics, reads nothing outside its
// window or past what QEMU would read, keeps QEMU's bounds on every name,
// derives its booleans from the bits, and a header it builds back from
// what it parsed comes back field for field.
func FuzzQCOW2Header(f *testing.F) {
	f.Add(build(image{version: 3, clusterBits: 16, size: 64 << 20, backing: "/var/lib/otherix/pools/default/images/bases/x.qcow2", format: "qcow2"}))
	f.Add(build(image{version: 2, clusterBits: 16, size: 1 << 30, backing: "base.img"}))
	f.Add(build(image{version: 3, clusterBits: 16, incompat: IncompatDataFile, dataFileExt: true, dataFile: "/etc/shadow"}))
	f.Add(build(image{version: 3, clusterBits: 16, incompat: IncompatDataFile, autoclear: AutoclearDataFileRaw, dataFileExt: true, dataFile: "/dev/sda"}))
	f.Add(build(image{version: 3, clusterBits: 9, backing: `json:{"driver":"file"}`, format: "raw", dataFileExt: true}))
	f.Add(build(image{version: 3, clusterBits: 16, crypt: 2, encryptionExt: true}))
	f.Add([]byte("QFI\xfb"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		window := min(len(b), MaxHeaderRead, 1<<h.ClusterBits)
		if len(h.BackingFile) > MaxBackingName || len(h.BackingFormat) > MaxBackingFormat || len(h.DataFile) > window {
			t.Fatalf("a name beyond its bound: %+v", h)
		}
		if h.NamesBacking() {
			if h.BackingOffset+uint64(h.BackingSize) > uint64(window) || h.BackingOffset < uint64(h.HeaderLength)+8 {
				t.Fatalf("backing name at %d+%d, outside [%d, %d)", h.BackingOffset, h.BackingSize, h.HeaderLength+8, window)
			}
			if h.BackingFile != string(b[h.BackingOffset:h.BackingOffset+uint64(h.BackingSize)]) || h.BackingFile == "" {
				t.Fatalf("backing name %q is not the bytes the header points at", h.BackingFile)
			}
		} else if h.BackingFile != "" {
			t.Fatal("a backing name without backing fields")
		}
		if h.ExternalData() != (h.Incompatible&IncompatDataFile != 0) || h.RawExternalData() != (h.Autoclear&AutoclearDataFileRaw != 0) ||
			h.Encrypted() != (h.CryptMethod != 0 || h.EncryptionExtension) || (h.DataFile != "" && !h.DataFileExtension) {
			t.Fatalf("derived fields disagree with the bits: %+v", h)
		}
		if h.Version == 2 && (h.Incompatible|h.Compatible|h.Autoclear != 0 || h.HeaderLength != v2HeaderLen) {
			t.Fatalf("version 2 header with version 3 fields: %+v", h)
		}
		// Whatever follows the window, or the bytes the parser used,
		// cannot change what it read.
		longer := append(bytes.Clone(b), bytes.Repeat([]byte{0xff}, 512)...)
		if again, err := Parse(longer); err != nil || again != h {
			t.Fatalf("bytes past what was read changed the result: %+v, %v -> %+v", h, err, again)
		}

		m := image{version: h.Version, clusterBits: h.ClusterBits, crypt: h.CryptMethod, size: h.Size,
			incompat: h.Incompatible, compat: h.Compatible, autoclear: h.Autoclear,
			backing: h.BackingFile, format: h.BackingFormat, dataFile: h.DataFile,
			dataFileExt: h.DataFileExtension, encryptionExt: h.EncryptionExtension}
		rebuilt := build(m)
		if len(rebuilt) > 1<<h.ClusterBits {
			return // a shorter layout than the fuzzer's may still not fit a tiny cluster
		}
		again, err := Parse(rebuilt)
		if err != nil {
			t.Fatalf("rebuilt header: %v", err)
		}
		again.HeaderLength, again.BackingOffset = h.HeaderLength, h.BackingOffset
		if again != h {
			t.Fatalf("round trip: %+v -> %+v", h, again)
		}
	})
}
