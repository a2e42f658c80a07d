package images

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(qemuImgBinary); err != nil {
		t.Skip("qemu-img not installed; these tests need it to read image sizes")
	}
}

// rawDisk returns size random bytes that look like an MBR-partitioned disk.
func rawDisk(t *testing.T, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	copy(b, "not QFI")
	b[510], b[511] = 0x55, 0xAA
	copy(b[512:], "not-gpt!")
	return b
}

// qcow2Image returns the bytes of a fresh qcow2 image of virtual size size.
func qcow2Image(t *testing.T, size string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	if out, err := exec.Command(qemuImgBinary, "create", "-q", "-f", "qcow2", p, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// serve starts a loopback server and counts the requests it receives.
func serve(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// serveBytes serves body with ETag and Range support, like a mirror would.
func serveBytes(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}
}

// loopback is what tests that serve images over loopback must allow.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// newCache opens a cache in a fresh directory. Unless opts says otherwise
// it may fetch from loopback, where the tests' servers listen.
func newCache(t *testing.T, opts Options) *Cache {
	t.Helper()
	if opts.Allow == nil {
		opts.Allow = loopback
	}
	c, err := New("default", filepath.Join(t.TempDir(), "pool"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want code %s", code)
	}
	if !errors.Is(err, &Error{Code: code}) {
		t.Fatalf("err = %v (code %q), want code %s", err, ErrorCode(err), code)
	}
}

// dirNames lists every entry of dir, hidden ones included.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// assertNothingCached checks that a refused or failed Ensure left no base,
// no source record, no partial download and no conversion behind.
func assertNothingCached(t *testing.T, c *Cache) {
	t.Helper()
	for _, d := range []string{dirBases, dirSources, dirPartial, dirTmp, dirUsage} {
		if names := dirNames(t, filepath.Join(c.dir, d)); len(names) != 0 {
			t.Errorf("%s/ holds %v, want nothing", d, names)
		}
	}
	if names := dirNames(t, c.dir); strings.Join(names, ",") != "bases,partial,sources,tmp,usage" {
		t.Errorf("cache directory holds %v, want the five subdirectories only", names)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("pool holds %v, want nothing", names)
	}
}

func ensure(t *testing.T, c *Cache, url, sha string) (Image, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Ensure(ctx, url, sha, nil)
}

func hasPrefixAny(names []string, prefix string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// qemuInfo is qemu-img info of a file the test trusts (format given).
func qemuInfo(t *testing.T, p string) imageInfo {
	t.Helper()
	out, err := exec.Command(qemuImgBinary, "info", "--output=json", "-f", "qcow2", p).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", p, err)
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info
}
