// Package images keeps the per-pool cache of base images that VM disks are
// layered on: it downloads each image once, refuses what QEMU must not
// open, normalises the rest into standalone qcow2 files and hands out
// VM disks backed by them.
//
// # Layout
//
// Under the pool's images directory:
//
//	bases/<sha256>.qcow2    a normalised base: written by qemu-img convert
//	                        from a download whose sha256 (of the bytes the
//	                        origin sent) names it
//	sources/<key>.json      one per source URL (key = sha256 of the URL):
//	                        the URL, the sha256 it served, its validators
//	partial/<key>[.meta]    a download in progress, kept for a resume
//	tmp/                    conversions in progress, emptied at start
//	usage/<sha256>.json     a base's last use (the LRU order of eviction)
//	                        and its names in the old layout
//	migrate.json            the journal of a legacy-layout migration
//
// A base is keyed by content, so two URLs serving the same bytes share it,
// but a request is served from the cache only through the record of its
// own URL (and, when it names a sha256, only if the record has that
// digest): a URL that merely shares a file name with another can never
// stand in for it.
//
// Files of the layout before this one (an image per URL basename at the
// top of the directory) are moved into bases/ by MigrateLegacy, and the VM
// disks backed by them rebased onto the new path (see migrate.go).
//
// A base is kept while any VM disk's backing chain uses it (a scan of the
// disk directories' qcow2 headers: refs.go). With a size limit, unused
// bases are evicted least recently used first (evict.go).
package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	defaultStallTimeout = 30 * time.Second
	// DefaultMaxSize caps both the bytes an image download may bring and
	// the virtual size of the image: larger than any cloud image, small
	// enough that one tenant cannot fill a pool with a single URL.
	DefaultMaxSize int64 = 64 << 30
)

// PullPolicy says when a cached image is checked against its origin.
type PullPolicy string

const (
	// PullIfNotPresent uses a cached image of the same URL (and digest, if
	// one is named) without touching the network. The default.
	PullIfNotPresent PullPolicy = "if-not-present"
	// PullAlways asks the origin on every use, with a conditional request
	// (If-None-Match / If-Modified-Since): a 304 keeps the cached image, a
	// new body is downloaded and normalised.
	PullAlways PullPolicy = "always"
	// PullNever uses only what is cached and fails with CodeNotPresent
	// otherwise. Only per call (EnsureWith): an agent-wide Never would
	// make a fresh node useless.
	PullNever PullPolicy = "never"
)

// Options tunes a Cache. The zero value is usable.
type Options struct {
	// StallTimeout aborts a download that receives no bytes for this long
	// (default 30s). The partial file is kept so the next Ensure resumes.
	StallTimeout time.Duration
	// MaxNameLen bounds an image name in bytes (default 128).
	MaxNameLen int
	// MaxSize caps the bytes of a download and the virtual size of an
	// image (default DefaultMaxSize).
	MaxSize int64
	// Allow lists destinations downloads may reach although the default
	// policy denies them (loopback, link-local, the cluster's networks).
	Allow []netip.Prefix
	// PullPolicy is PullIfNotPresent (the default) or PullAlways.
	PullPolicy PullPolicy
	// MaxCacheBytes limits the bytes of the pool's bases; above it, unused
	// bases are evicted least recently used first, after each download and
	// every EvictInterval. Zero or less: no limit.
	MaxCacheBytes int64
	// EvictInterval is the period of the eviction pass (default 10m); it
	// runs only with MaxCacheBytes set.
	EvictInterval time.Duration
	// EvictGrace keeps bases used this recently (default 5m).
	EvictGrace time.Duration
	// DiskDirs are the directories whose qcow2 files' backing chains keep
	// bases from deletion and eviction, and are rebased by MigrateLegacy.
	DiskDirs []string
	// OnEvict, if set, hears of each eviction pass that evicted something
	// or failed (for the agent's log).
	OnEvict func(evicted []string, err error)

	// now replaces the clock (tests); set before the eviction loop starts.
	now func() time.Time
}

// Image is a cached base image.
type Image struct {
	Pool        string
	Name        string // the source URL's file name, for people to read
	URL         string // the source this image was fetched from
	Path        string
	Format      string // always "qcow2": every base is normalised
	SizeBytes   int64  // bytes on disk
	VirtualSize int64  // guest-visible size
	SHA256      string // lower-case hex of the bytes the source served
}

// Progress reports download progress; totalBytes is -1 when the server did
// not say. It is called from the downloading goroutine and should be quick.
type Progress func(doneBytes, totalBytes int64)

// Cache is the image cache of one pool directory. Its methods are safe for
// concurrent use.
type Cache struct {
	pool       string
	dir        string // absolute
	client     *http.Client
	policy     *destPolicy
	stall      time.Duration
	maxNameLen int
	maxSize    int64
	pull       PullPolicy
	maxCache   int64
	evictGrace time.Duration
	diskDirs   []string
	onEvict    func([]string, error)

	// gcMu serialises what removes bases (Delete, Evict) with the disk
	// creations that name them (CreateVMDisk) and with the migration.
	gcMu sync.RWMutex
	// usageMu serialises read-modify-writes of usage records.
	usageMu sync.Mutex

	// qemuImg is the qemu-img binary; a seam for tests.
	qemuImg string
	// freeSpace reports the bytes available to us under dir; a seam so tests
	// can pretend the pool is full.
	freeSpace func(dir string) (int64, error)
	// now is the clock of source and usage records; a seam for tests.
	now func() time.Time
	// migrateHook, if set, is called at each kill point of MigrateLegacy;
	// an error stops the migration there, as a kill -9 would. A test seam.
	migrateHook func(step string) error

	// ctx is the lifecycle root of the download goroutines; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights map[string]*flight // downloads in progress, by source URL
	// described (guarded by mu) remembers each base's description by
	// digest for as long as its file is the same file (fileID): a cached
	// Ensure and each heartbeat's List then skip the qemu-img info exec,
	// about 6 ms per image per call on a 2-core host (BenchmarkCachedEnsure).
	described map[string]describedImage
	// handed (guarded by mu) is when each base was last returned by
	// Ensure, for eviction's grace period.
	handed map[string]time.Time
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
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, newError(CodeCacheIO, "resolve pool directory", err)
	}
	for _, d := range []string{abs, filepath.Join(abs, dirBases), filepath.Join(abs, dirSources), filepath.Join(abs, dirPartial), filepath.Join(abs, dirTmp), filepath.Join(abs, dirUsage)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, newError(CodeCacheIO, "create pool directory", err)
		}
	}
	// A conversion the agent did not finish is worthless: its download is
	// still in partial/ or its base already committed.
	if entries, err := os.ReadDir(filepath.Join(abs, dirTmp)); err == nil {
		for _, e := range entries {
			os.Remove(filepath.Join(abs, dirTmp, e.Name()))
		}
	}
	c := &Cache{
		pool:       pool,
		dir:        abs,
		policy:     &destPolicy{allow: opts.Allow},
		stall:      opts.StallTimeout,
		maxNameLen: opts.MaxNameLen,
		maxSize:    opts.MaxSize,
		pull:       opts.PullPolicy,
		maxCache:   opts.MaxCacheBytes,
		evictGrace: opts.EvictGrace,
		onEvict:    opts.OnEvict,
		qemuImg:    qemuImgBinary,
		freeSpace:  statfsFree,
		now:        time.Now,
		flights:    map[string]*flight{},
		described:  map[string]describedImage{},
		handed:     map[string]time.Time{},
	}
	c.client = newHTTPClient(c.policy)
	if opts.now != nil {
		c.now = opts.now
	}
	if c.stall <= 0 {
		c.stall = defaultStallTimeout
	}
	if c.maxNameLen <= 0 {
		c.maxNameLen = defaultMaxNameLen
	}
	if c.maxSize <= 0 {
		c.maxSize = DefaultMaxSize
	}
	if c.evictGrace <= 0 {
		c.evictGrace = defaultEvictGrace
	}
	for _, d := range opts.DiskDirs {
		a, err := filepath.Abs(d)
		if err != nil {
			return nil, newError(CodeCacheIO, "resolve disk directory", err)
		}
		c.diskDirs = append(c.diskDirs, a)
	}
	switch c.pull {
	case "":
		c.pull = PullIfNotPresent
	case PullIfNotPresent, PullAlways:
	default:
		return nil, fmt.Errorf("images: pull policy %q is not %s or %s", c.pull, PullIfNotPresent, PullAlways)
	}
	// Until the control plane names the cluster's networks, deny the
	// default overlay supernet.
	c.SetClusterNetworks([]netip.Prefix{defaultSupernet})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.maxCache > 0 {
		interval := opts.EvictInterval
		if interval <= 0 {
			interval = 10 * time.Minute
		}
		c.wg.Add(1)
		go c.evictLoop(interval)
	}
	return c, nil
}

// Close aborts downloads in progress and waits for them to stop. Partial
// files are kept for a later resume.
func (c *Cache) Close() error {
	c.cancel()
	c.wg.Wait()
	return nil
}

// SetClusterNetworks replaces the cluster's own networks (the overlay
// supernet and the VM networks' CIDRs), which downloads may not reach
// unless Options.Allow names them.
func (c *Cache) SetClusterNetworks(prefixes []netip.Prefix) {
	c.policy.setCluster(prefixes)
}

func statfsFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Ensure returns the base image for rawURL, downloading and normalising it
// if the pool holds none for this URL yet (or, with PullAlways, if the
// origin has changed it). sha256, when given, must match the bytes the
// origin served; a cached image of the same URL with another digest is
// not used: the URL is fetched again.
//
// Concurrent calls for one URL share a single download. A caller whose ctx
// ends stops waiting; the download goes on while anyone still waits.
func (c *Cache) Ensure(ctx context.Context, rawURL, sha string, progress Progress) (Image, error) {
	return c.EnsureWith(ctx, rawURL, sha, "", progress)
}

// EnsureWith is Ensure under the pull policy pull for this call ("" for
// the cache's own): a VM spec may ask for Always or Never.
func (c *Cache) EnsureWith(ctx context.Context, rawURL, sha string, pull PullPolicy, progress Progress) (Image, error) {
	if _, err := nameFromURL(rawURL, c.maxNameLen); err != nil {
		return Image{}, err
	}
	want, err := normalizeSHA(sha)
	if err != nil {
		return Image{}, err
	}
	switch pull {
	case "":
		pull = c.pull
	case PullIfNotPresent, PullAlways, PullNever:
	default:
		return Image{}, newError(CodePullPolicyInvalid, fmt.Sprintf("pull policy %q is not %s, %s or %s", pull, PullIfNotPresent, PullAlways, PullNever), nil)
	}
	if pull != PullAlways {
		img, ok, err := c.cached(ctx, rawURL, want)
		if err != nil {
			return Image{}, err
		}
		if ok {
			c.touch(img.SHA256)
			return img, nil
		}
		if pull == PullNever {
			msg := "no cached image for " + rawURL
			if want != "" {
				msg += " with sha256 " + want
			}
			return Image{}, newError(CodeNotPresent, msg+" on pool "+c.pool+" and the pull policy is Never", nil)
		}
	}

	f, sub := c.join(rawURL, want, pull, progress)
	defer c.leave(f, sub)
	select {
	case <-f.done:
		if f.err != nil {
			return Image{}, f.err
		}
		// Another caller started this download, perhaps with another digest.
		if err := checkDigest(f.img, want); err != nil {
			return Image{}, err
		}
		c.touch(f.img.SHA256)
		return f.img, nil
	case <-ctx.Done():
		return Image{}, fmt.Errorf("images: ensure %s: %w", rawURL, ctx.Err())
	}
}

func checkDigest(img Image, want string) error {
	if want != "" && img.SHA256 != want {
		return newError(CodeChecksumMismatch, fmt.Sprintf("download refused: %s served sha256 %s, want %s", img.URL, img.SHA256, want), nil)
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

// cached returns the image of url's record if its base is present and it
// has the digest wanted (any, if want is empty); ok is false otherwise.
func (c *Cache) cached(ctx context.Context, url, want string) (img Image, ok bool, err error) {
	rec, ok, err := c.readSource(url)
	if !ok || err != nil {
		return Image{}, false, err
	}
	if want != "" && rec.SHA256 != want {
		return Image{}, false, nil
	}
	if _, err := os.Stat(c.basePath(rec.SHA256)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Image{}, false, nil
		}
		return Image{}, false, newError(CodeCacheIO, "stat base", err)
	}
	img, err = c.describe(ctx, rec.SHA256)
	if err != nil {
		return Image{}, false, err
	}
	img.Name, img.URL = rec.Name, rec.URL
	return img, true, nil
}

// describe builds the Image of a committed base, or returns the one built
// before for the same file. Name and URL are left for the caller.
func (c *Cache) describe(ctx context.Context, digest string) (Image, error) {
	p := c.basePath(digest)
	st, err := os.Stat(p)
	if err != nil {
		return Image{}, newError(CodeCacheIO, "stat base", err)
	}
	id, idOK := fileIDOf(st)
	if idOK {
		c.mu.Lock()
		d, ok := c.described[digest]
		c.mu.Unlock()
		if ok && d.id == id {
			return d.img, nil
		}
	}
	info, err := c.info(ctx, formatQCOW2, p)
	if err != nil {
		return Image{}, err
	}
	img := Image{Pool: c.pool, Path: p, Format: formatQCOW2, SizeBytes: st.Size(), VirtualSize: info.VirtualSize, SHA256: digest}
	if idOK {
		c.mu.Lock()
		c.described[digest] = describedImage{id: id, img: img}
		c.mu.Unlock()
	}
	return img, nil
}

// List returns the bases committed to the pool, one per content, each
// named after (the lowest of) the URLs that served it. Partial downloads,
// conversions in progress and files of the old layout are left out.
func (c *Cache) List() ([]Image, error) {
	entries, err := os.ReadDir(filepath.Join(c.dir, dirBases))
	if err != nil {
		return nil, newError(CodeCacheIO, "read bases directory", err)
	}
	sources, err := c.sourcesByDigest()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, e := range entries {
		digest, ok := strings.CutSuffix(e.Name(), ".qcow2")
		if !e.Type().IsRegular() || !ok || len(digest) != 2*sha256.Size {
			continue
		}
		img, err := c.describe(c.ctx, digest)
		if err != nil {
			if ErrorCode(err) == CodeInvalidFormat {
				continue
			}
			return nil, err
		}
		if rec, ok := sources[digest]; ok {
			img.Name, img.URL = rec.Name, rec.URL
		} else {
			img.Name = "sha256-" + digest[:12]
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].SHA256 < out[j].SHA256
	})
	return out, nil
}

// LegacyFiles names the files of the layout before content keys (one image
// per URL basename at the top of the cache) that MigrateLegacy has not
// moved yet.
func (c *Cache) LegacyFiles() []string {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && validLegacyName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// touch notes in memory that digest was just handed out: eviction spares
// it for the grace period, so the VM disk about to be built on it finds it.
// A cached Ensure writes nothing to disk; CreateVMDisk records the use.
func (c *Cache) touch(digest string) {
	c.mu.Lock()
	c.handed[digest] = c.now()
	c.mu.Unlock()
}

// handedAt is when digest was last handed out by this process.
func (c *Cache) handedAt(digest string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handed[digest]
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

// DeniedClusterNetworks returns the cluster networks downloads are denied,
// as last set.
func (c *Cache) DeniedClusterNetworks() []netip.Prefix {
	c.policy.mu.RLock()
	defer c.policy.mu.RUnlock()
	return slices.Clone(c.policy.cluster)
}
