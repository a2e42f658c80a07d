// Package images keeps the per-pool cache of base images that VM disks are
// layered on: it downloads each image once, checks its digest and format,
// and hands out overlays backed by it.
package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/internal/atomicfile"
)

const defaultStallTimeout = 30 * time.Second

// Options tunes a Cache. The zero value is usable.
type Options struct {
	// HTTPClient fetches images. nil means a client with dial, TLS and
	// response-header timeouts but no overall timeout: a large image on a
	// slow link may legitimately take hours; StallTimeout catches hangs.
	HTTPClient *http.Client
	// StallTimeout aborts a download that receives no bytes for this long
	// (default 30s). The partial file is kept so the next Ensure resumes.
	StallTimeout time.Duration
	// MaxNameLen bounds an image name in bytes (default 128).
	MaxNameLen int
}

// Image is a cached base image.
type Image struct {
	Pool        string
	Name        string
	Path        string
	Format      string // "qcow2" or "raw", detected from the content
	SizeBytes   int64  // bytes on disk
	VirtualSize int64  // guest-visible size
	SHA256      string // lower-case hex
}

// Progress reports download progress; totalBytes is -1 when the server did
// not say. It is called from the downloading goroutine and should be quick.
type Progress func(doneBytes, totalBytes int64)

// Cache is the image cache of one pool directory. Its methods are safe for
// concurrent use.
type Cache struct {
	pool       string
	dir        string
	client     *http.Client
	stall      time.Duration
	maxNameLen int

	// qemuImg is the qemu-img binary; a seam for tests.
	qemuImg string
	// freeSpace reports the bytes available to us under dir; a seam so tests
	// can pretend the pool is full.
	freeSpace func(dir string) (int64, error)

	// ctx is the lifecycle root of the download goroutines; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights map[string]*flight // downloads in progress, by image name
	// described (guarded by mu) remembers each committed image's
	// description by name for as long as its file is the same file
	// (fileID): a cached Ensure and each heartbeat's List then skip the
	// qemu-img info exec, about 6 ms per image per call on a 2-core host
	// (BenchmarkCachedEnsure).
	described map[string]describedImage
}

// describedImage is an Image as described when its file had identity id.
type describedImage struct {
	id  fileID
	img Image
}

// fileID identifies one version of a file: a replaced file (a new inode
// after a rename) or one written in place (size or mtime) differs.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func fileIDOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true
}

// New opens the cache for pool in dir, creating dir if needed.
func New(pool, dir string, opts Options) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, newError(CodeCacheIO, "create pool directory", err)
	}
	c := &Cache{
		pool:       pool,
		dir:        dir,
		client:     opts.HTTPClient,
		stall:      opts.StallTimeout,
		maxNameLen: opts.MaxNameLen,
		qemuImg:    qemuImgBinary,
		freeSpace:  statfsFree,
		flights:    map[string]*flight{},
		described:  map[string]describedImage{},
	}
	if c.client == nil {
		c.client = defaultClient()
	}
	if c.stall <= 0 {
		c.stall = defaultStallTimeout
	}
	if c.maxNameLen <= 0 {
		c.maxNameLen = defaultMaxNameLen
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close aborts downloads in progress and waits for them to stop. Partial
// files are kept for a later resume.
func (c *Cache) Close() error {
	c.cancel()
	c.wg.Wait()
	return nil
}

func defaultClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}}
}

func statfsFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func (c *Cache) path(name string) string        { return filepath.Join(c.dir, name) }
func (c *Cache) shaPath(name string) string     { return filepath.Join(c.dir, "."+name+".sha256") }
func (c *Cache) partialPath(name string) string { return filepath.Join(c.dir, "."+name+".partial") }
func (c *Cache) metaPath(name string) string    { return filepath.Join(c.dir, "."+name+".partial.meta") }

// Ensure returns the image named by rawURL's basename, downloading it if
// the pool does not hold it yet. An image already present is used as is,
// without touching the network; sha256, when given, must match it.
//
// Concurrent calls for one name share a single download. A caller whose ctx
// ends stops waiting; the download goes on while anyone still waits.
func (c *Cache) Ensure(ctx context.Context, rawURL, sha string, progress Progress) (Image, error) {
	name, err := nameFromURL(rawURL, c.maxNameLen)
	if err != nil {
		return Image{}, err
	}
	want, err := normalizeSHA(sha)
	if err != nil {
		return Image{}, err
	}
	if img, ok, err := c.cached(ctx, name); ok || err != nil {
		if err != nil {
			return Image{}, err
		}
		return img, checkDigest(img, want)
	}

	f, sub := c.join(name, rawURL, want, progress)
	defer c.leave(f, sub)
	select {
	case <-f.done:
		if f.err != nil {
			return Image{}, f.err
		}
		// Another caller started this download, perhaps with another digest.
		return f.img, checkDigest(f.img, want)
	case <-ctx.Done():
		return Image{}, fmt.Errorf("images: ensure %s: %w", name, ctx.Err())
	}
}

func checkDigest(img Image, want string) error {
	if want != "" && img.SHA256 != want {
		return newError(CodeChecksumMismatch, fmt.Sprintf("cached image %s differs: sha256 %s, want %s", img.Name, img.SHA256, want), nil)
	}
	return nil
}

func normalizeSHA(s string) (string, error) {
	s = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
	if s == "" {
		return "", nil
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", newError(CodeSHA256Invalid, fmt.Sprintf("sha256 %q is not 64 hex digits", s), nil)
	}
	return s, nil
}

// cached describes name if it is in the pool; ok is false when it is not.
func (c *Cache) cached(ctx context.Context, name string) (img Image, ok bool, err error) {
	if _, err := os.Stat(c.path(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Image{}, false, nil
		}
		return Image{}, false, newError(CodeCacheIO, "stat "+name, err)
	}
	img, err = c.describe(ctx, name)
	return img, true, err
}

// describe builds the Image of a file already committed to the pool, or
// returns the one built before for the same file.
func (c *Cache) describe(ctx context.Context, name string) (Image, error) {
	p := c.path(name)
	st, err := os.Stat(p)
	if err != nil {
		return Image{}, newError(CodeCacheIO, "stat "+name, err)
	}
	if id, ok := fileIDOf(st); ok {
		c.mu.Lock()
		d, ok := c.described[name]
		c.mu.Unlock()
		if ok && d.id == id {
			return d.img, nil
		}
	}
	img, err := c.describeFile(ctx, name, p, st)
	if err != nil {
		return img, err
	}
	c.remember(name, st, img)
	return img, nil
}

// remember keeps img as the description of name while its file is st's.
func (c *Cache) remember(name string, st fs.FileInfo, img Image) {
	id, ok := fileIDOf(st)
	if !ok {
		return
	}
	c.mu.Lock()
	c.described[name] = describedImage{id: id, img: img}
	c.mu.Unlock()
}

// describeFile reads the digest sidecar, the format and (with qemu-img
// info) the virtual size of the image at p.
func (c *Cache) describeFile(ctx context.Context, name, p string, st fs.FileInfo) (Image, error) {
	digest, err := c.digest(name)
	if err != nil {
		return Image{}, err
	}
	format, err := detectFormat(p)
	if err != nil {
		return Image{}, err
	}
	vsize, err := inspect(ctx, c.qemuImg, p, format)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Pool: c.pool, Name: name, Path: p, Format: format,
		SizeBytes: st.Size(), VirtualSize: vsize, SHA256: digest,
	}, nil
}

// digest reads the sidecar, or hashes the image and writes the sidecar when
// it is missing (an image placed by hand, or a sidecar lost).
func (c *Cache) digest(name string) (string, error) {
	if b, err := os.ReadFile(c.shaPath(name)); err == nil {
		if s, err := normalizeSHA(string(b)); err == nil && s != "" {
			return s, nil
		}
	}
	f, err := os.Open(c.path(name))
	if err != nil {
		return "", newError(CodeCacheIO, "open "+name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", newError(CodeCacheIO, "hash "+name, err)
	}
	s := hex.EncodeToString(h.Sum(nil))
	if err := atomicfile.Write(c.shaPath(name), []byte(s+"\n"), 0o644); err != nil {
		return "", newError(CodeCacheIO, "write digest of "+name, err)
	}
	return s, nil
}

// List returns the images committed to the pool. Partial downloads,
// sidecars and files that are not disk images are left out.
func (c *Cache) List() ([]Image, error) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, newError(CodeCacheIO, "read pool directory", err)
	}
	var out []Image
	for _, e := range entries {
		if !e.Type().IsRegular() || validName(e.Name(), c.maxNameLen) != nil {
			continue
		}
		img, err := c.describe(c.ctx, e.Name())
		if err != nil {
			if ErrorCode(err) == CodeInvalidFormat {
				continue
			}
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
