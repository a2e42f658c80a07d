package qcow2

import (
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadQemuImgImages: the headers qemu-img 7.2 writes parse to what it
// was told, names and bits included.
func TestReadQemuImgImages(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	data := filepath.Join(dir, "data.raw")
	tests := []struct {
		name string
		args []string
		want Header
	}{
		{"v3", []string{"-o", "compat=1.1"}, Header{Version: 3, ClusterBits: 16}},
		{"v2", []string{"-o", "compat=0.10"}, Header{Version: 2, ClusterBits: 16}},
		{"small clusters", []string{"-o", "cluster_size=4096"}, Header{Version: 3, ClusterBits: 12}},
		{"backing", []string{"-b", base, "-F", "qcow2"}, Header{Version: 3, ClusterBits: 16, BackingFile: base, BackingFormat: "qcow2"}},
		{"v2 backing", []string{"-o", "compat=0.10", "-b", base, "-F", "raw"}, Header{Version: 2, ClusterBits: 16, BackingFile: base, BackingFormat: "raw"}},
		{"data file", []string{"-o", "data_file=" + data}, Header{Version: 3, ClusterBits: 16, Incompatible: IncompatDataFile, DataFileExtension: true, DataFile: data}},
		{"raw data file", []string{"-o", "data_file=" + data + ",data_file_raw=on"},
			Header{Version: 3, ClusterBits: 16, Incompatible: IncompatDataFile, Autoclear: AutoclearDataFileRaw, DataFileExtension: true, DataFile: data}},
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "1G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.qcow2")
			args := append(append([]string{"create", "-q", "-f", "qcow2"}, tt.args...), p, "1G")
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img: %v: %s", err, out)
			}
			h, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			got := Header{Version: h.Version, ClusterBits: h.ClusterBits, Incompatible: h.Incompatible &^ 1, Autoclear: h.Autoclear,
				BackingFile: h.BackingFile, BackingFormat: h.BackingFormat, DataFileExtension: h.DataFileExtension, DataFile: h.DataFile}
			if got != tt.want || h.Size != 1<<30 || h.Encrypted() {
				t.Errorf("header = %+v, want %+v with 1 GiB", h, tt.want)
			}
		})
	}
}

// TestParseBounds: where the two parsers this package replaced differed,
// the stricter rule holds, and QEMU's own bounds hold.
func TestParseBounds(t *testing.T) {
	plain := image{version: 3, clusterBits: 16, size: 1 << 20}
	be := binary.BigEndian
	tests := []struct {
		name   string
		b      []byte
		reason string // in the error; "" means accepted
	}{
		{"plain", build(plain), ""},
		{"short", build(plain)[:100], "truncated"},
		{"no magic", append([]byte("QFI\xfa"), build(plain)[4:]...), "magic"},
		{"version 4", func() []byte { b := build(plain); be.PutUint32(b[4:], 4); return b }(), "version"},
		{"cluster bits 22", func() []byte { b := build(plain); be.PutUint32(b[20:], 22); return b }(), "cluster bits"},
		{"header length not a multiple of 8", func() []byte { b := build(plain); be.PutUint32(b[100:], 108); return b }(), "header length"},
		{"header length past the first cluster", func() []byte {
			b := build(image{version: 3, clusterBits: 9, padTo: 4096})
			be.PutUint32(b[100:], 512)
			return b
		}(), "no end"},
		// The byte-based parser required an end marker, the file-based one
		// did not (nor does QEMU): required.
		{"no end of extensions", build(plain)[:v3HeaderLen], "no end"},
		// QEMU stops reading extensions at the backing file name; the
		// byte-based parser read on past it.
		{"extension after the backing name", func() []byte {
			b := build(image{version: 3, clusterBits: 16, backing: "/base", format: "raw"})
			be.PutUint64(b[8:], v3HeaderLen+4) // the name now starts inside the format extension
			return b
		}(), "no end"},
		{"backing name of 1024 bytes", build(image{version: 3, clusterBits: 16, backing: strings.Repeat("a", 1024)}), "backing file name of 1024"},
		{"backing name of 1023 bytes", build(image{version: 3, clusterBits: 16, backing: strings.Repeat("a", 1023)}), ""},
		{"backing name past the first cluster", func() []byte {
			b := build(image{version: 3, clusterBits: 9, backing: strings.Repeat("a", 500), padTo: 2048})
			return b
		}(), "outside the first cluster"},
		{"backing name past the window", func() []byte {
			b := build(image{version: 3, clusterBits: 21, backing: "/base", padTo: MaxHeaderRead + 4096})
			copy(b[MaxHeaderRead+8:], "/base")
			be.PutUint64(b[8:], MaxHeaderRead+8)
			return b
		}(), "outside the first cluster"},
		// The file-based parser refused a backing size without an offset;
		// the byte-based one ignored it: refused.
		{"backing size without offset", func() []byte { b := build(plain); be.PutUint32(b[16:], 5); return b }(), "backing file name of 5 bytes at offset 0"},
		// QEMU refuses a backing format of 16 bytes or more; the two parsers
		// ignored it (file-based, over 63) or took it (byte-based).
		{"backing format of 16 bytes", build(image{version: 3, clusterBits: 16, backing: "/b", format: strings.Repeat("r", 16)}), "backing format of 16"},
		{"extension overruns", func() []byte {
			b := build(image{version: 3, clusterBits: 16, format: "raw"})
			be.PutUint32(b[v3HeaderLen+4:], 1<<20)
			return b
		}(), "runs past"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.b)
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.reason != "" && err == nil:
				t.Fatalf("accepted, want %q", tt.reason)
			case err != nil && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.reason)):
				t.Fatalf("err = %v, want ErrInvalid saying %q", err, tt.reason)
			}
		})
	}
}

// TestParseExtensionsWithoutBits: a data-file or encryption extension is
// reported even when no feature bit or method says so, and even when
// empty (the byte-based parser saw only a non-empty data file name).
func TestParseExtensionsWithoutBits(t *testing.T) {
	h, err := Parse(build(image{version: 3, clusterBits: 16, dataFileExt: true, encryptionExt: true}))
	if err != nil {
		t.Fatal(err)
	}
	if !h.DataFileExtension || h.ExternalData() || !h.Encrypted() || h.CryptMethod != 0 {
		t.Fatalf("header = %+v", h)
	}
}

// TestParseKeepsFieldsOnError: a caller picks its refusal from what was
// decoded before the fault.
func TestParseKeepsFieldsOnError(t *testing.T) {
	b := build(image{version: 3, clusterBits: 16, backing: "/etc/shadow", incompat: IncompatDataFile})
	binary.BigEndian.PutUint32(b[v3HeaderLen+4:], 1<<20) // the end marker now claims to be long
	binary.BigEndian.PutUint32(b[v3HeaderLen:], 1)
	h, err := Parse(b)
	if err == nil {
		t.Fatal("accepted")
	}
	if !h.NamesBacking() || !h.ExternalData() || h.BackingFile != "" {
		t.Fatalf("header = %+v", h)
	}
}
