package images

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// secretFile stands for a host file a tenant must never read through an
// image: its content is recognisable, and every open of it is recorded.
type secretFile struct {
	path    string
	content []byte
	fd      int // inotify instance watching path
}

func newSecret(t *testing.T) *secretFile {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	content := bytes.Repeat([]byte("HOST-SECRET-"+hex.EncodeToString(b)+"\n"), 4096)
	s := &secretFile{path: filepath.Join(t.TempDir(), "host-secret"), content: content}
	if err := os.WriteFile(s.path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// watch starts recording opens of the secret; call it once the crafted
// image is built (building it may legitimately touch the file).
func (s *secretFile) watch(t *testing.T) {
	t.Helper()
	// Rewrite the content: qemu-img create truncates a data file it names.
	if err := os.WriteFile(s.path, s.content, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, s.path, unix.IN_OPEN|unix.IN_ACCESS); err != nil {
		t.Fatalf("inotify watch: %v", err)
	}
	s.fd = fd
}

// opened reports whether anything opened or read the secret since watch.
// Events are queued by the kernel, so no wait is needed once the opener
// has returned.
func (s *secretFile) opened(t *testing.T) bool {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Read(s.fd, buf)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	if err != nil {
		t.Fatalf("read inotify: %v", err)
	}
	return n > 0
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(qemuImgBinary, args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withBackingName writes name into the header cluster of a fresh qcow2 and
// points the header's backing file fields at it, with no backing format
// extension: qemu-img 7.2 no longer creates such images, but old ones (and
// hostile ones) exist, and QEMU would probe the backing file's format.
func withBackingName(t *testing.T, img []byte, name string) []byte {
	t.Helper()
	const off = 0x8000 // inside the first 64 KiB cluster, past the extensions
	out := bytes.Clone(img)
	copy(out[off:], name)
	binary.BigEndian.PutUint64(out[8:], off)
	binary.BigEndian.PutUint32(out[16:], uint32(len(name)))
	return out
}

// TestEnsureRefusesCraftedImages serves images a hostile tenant would
// craft. Each must be refused with a stable code, leave nothing in the
// cache, and never make anything open the host file it names.
func TestEnsureRefusesCraftedImages(t *testing.T) {
	needQemuImg(t)
	type craft func(t *testing.T, dir string, s *secretFile) []byte
	jsonName := func(s *secretFile) string {
		return `json:{"driver":"raw","file":{"driver":"file","filename":"` + s.path + `"}}`
	}
	tests := []struct {
		name  string
		craft craft
		code  string
	}{
		{"external data file", func(t *testing.T, dir string, s *secretFile) []byte {
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+s.path, p, "1M")
			return readFile(t, p)
		}, CodeExternalReference},
		{"external raw data file", func(t *testing.T, dir string, s *secretFile) []byte {
			// data_file_raw: guest offset = host file offset, so every byte
			// of the host file shows up in the guest.
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+s.path+",data_file_raw=on,preallocation=metadata", p, "1M")
			return readFile(t, p)
		}, CodeExternalReference},
		{"data file extension without the feature bit", func(t *testing.T, dir string, s *secretFile) []byte {
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+s.path, p, "1M")
			b := readFile(t, p)
			binary.BigEndian.PutUint64(b[72:], 0) // incompatible features
			return b
		}, CodeExternalReference},
		{"backing file with format", func(t *testing.T, dir string, s *secretFile) []byte {
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-b", s.path, "-F", "raw", p, "1M")
			return readFile(t, p)
		}, CodeExternalReference},
		{"backing file without format", func(t *testing.T, dir string, s *secretFile) []byte {
			return withBackingName(t, qcow2Image(t, "1M"), s.path)
		}, CodeExternalReference},
		{"json backing file with format", func(t *testing.T, dir string, s *secretFile) []byte {
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-u", "-b", jsonName(s), "-F", "raw", p, "1M")
			return readFile(t, p)
		}, CodeExternalReference},
		{"json backing file without format", func(t *testing.T, dir string, s *secretFile) []byte {
			return withBackingName(t, qcow2Image(t, "1M"), jsonName(s))
		}, CodeExternalReference},
		{"backing file in a qcow2 version 2", func(t *testing.T, dir string, s *secretFile) []byte {
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", s.path, "-F", "raw", p, "1M")
			return readFile(t, p)
		}, CodeExternalReference},
		{"raw disk starting with a qcow2 header", func(t *testing.T, dir string, s *secretFile) []byte {
			// A partitioned raw disk whose first sector is a qcow2 header
			// naming the secret as its backing file: probed, it would be
			// opened as qcow2.
			head := withBackingName(t, qcow2Image(t, "1M"), s.path)
			disk := rawDisk(t, 1<<20)
			copy(disk, head[:0x8000+len(s.path)])
			return disk
		}, CodeExternalReference},
		{"huge virtual size", func(t *testing.T, dir string, s *secretFile) []byte {
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", p, "16T")
			return readFile(t, p)
		}, CodeTooLarge},
		{"header claiming an absurd virtual size", func(t *testing.T, dir string, s *secretFile) []byte {
			b := qcow2Image(t, "1M")
			binary.BigEndian.PutUint64(b[24:], 1<<62)
			return b
		}, CodeTooLarge},
		{"truncated qcow2", func(t *testing.T, dir string, s *secretFile) []byte {
			raw := filepath.Join(dir, "x.raw")
			if err := os.WriteFile(raw, rawDisk(t, 4<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "x.qcow2")
			qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, p)
			b := readFile(t, p)
			return b[:len(b)/2]
		}, CodeCorrupt},
		{"qcow2 magic on garbage", func(t *testing.T, dir string, s *secretFile) []byte {
			b := rawDisk(t, 64<<10)
			copy(b, qcow2Magic)
			return b
		}, CodeInvalidFormat},
		{"encrypted qcow2", func(t *testing.T, dir string, s *secretFile) []byte {
			b := qcow2Image(t, "1M")
			binary.BigEndian.PutUint32(b[32:], 1) // AES
			return b
		}, CodeInvalidFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSecret(t)
			body := tt.craft(t, t.TempDir(), s)
			srv, _ := serve(t, serveBytes(body))
			c := newCache(t, Options{})
			s.watch(t)

			_, err := ensure(t, c, srv.URL+"/debian-12-genericcloud-amd64.qcow2", "")
			wantCode(t, err, tt.code)
			if !strings.Contains(err.Error(), "download refused") {
				t.Errorf("err = %v, want it to say download refused", err)
			}
			if strings.Contains(err.Error(), s.path) || strings.Contains(err.Error(), "HOST-SECRET") {
				t.Errorf("err = %v quotes the image's contents", err)
			}
			if s.opened(t) {
				t.Errorf("the host file the image names was opened")
			}
			assertNothingCached(t, c)
		})
	}
}

// TestSecretWatchSeesQemuImg proves the watch in the test above can fail:
// qemu-img check, run on the data-file image without our header check,
// opens the named host file and the watch sees it.
func TestSecretWatchSeesQemuImg(t *testing.T) {
	needQemuImg(t)
	s := newSecret(t)
	p := filepath.Join(t.TempDir(), "x.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+s.path, p, "1M")
	c := newCache(t, Options{})
	s.watch(t)
	_ = c.checkConsistent(context.Background(), p)
	if !s.opened(t) {
		t.Fatal("the watch did not see qemu-img check open the data file")
	}
}

func TestCheckQCOW2HeaderAcceptsPlainImages(t *testing.T) {
	needQemuImg(t)
	for _, compat := range []string{"0.10", "1.1"} {
		p := filepath.Join(t.TempDir(), "x.qcow2")
		qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "compat="+compat, p, "1G")
		h, err := checkQCOW2Header(p, DefaultMaxSize)
		if err != nil || h.VirtualSize != 1<<30 {
			t.Errorf("compat %s: header = %+v, %v", compat, h, err)
		}
	}
}
