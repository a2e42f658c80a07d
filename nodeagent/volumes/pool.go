package volumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Layout under Config.Root, shared by both drivers:
//
//	volumes/            the volumes (dir: NAME.qcow2 files; btrfs: NAME subvolumes)
//	snapshots/VOL/      a volume's offline snapshots
//	refs/VOL/SNAP/ID    a file per volume or snapshot whose backing chain reads VOL's SNAP
//	owners/VOL.json     the owner marker
//	journal/NODE/       a node's intent records, one per operation in flight
//
// Names starting with '.' are temporary: ".tmp-NODE-..." while being
// written, ".del-NODE-..." while being deleted. Each node removes only its
// own, so a shared pool's other nodes are never disturbed.
const (
	dirVolumes   = "volumes"
	dirSnapshots = "snapshots"
	dirRefs      = "refs"
	dirOwners    = "owners"
	dirJournal   = "journal"
)

// pool is what both drivers share: the layout, per-volume locks, the
// journal, owner markers and the crash test seam.
type pool struct {
	root    string
	node    string
	qemuImg string

	// crashAt, when set (tests only), is called at each named step of a
	// multi-step change; an error it returns stops the operation as a
	// crash would: nothing after it runs, no cleanup either.
	crashAt func(point string) error

	mu    sync.Mutex
	locks map[string]*volLock
}

type volLock struct {
	mu   sync.Mutex
	refs int
}

func newPool(cfg Config) (*pool, error) {
	if cfg.Root == "" || !filepath.IsAbs(cfg.Root) {
		return nil, newError(CodeDriverUnsupported, "pool root "+quote(cfg.Root)+" is not an absolute path", nil)
	}
	if err := checkName("node", cfg.Node); err != nil {
		return nil, err
	}
	p := &pool{root: filepath.Clean(cfg.Root), node: cfg.Node, qemuImg: cfg.QemuImg, locks: map[string]*volLock{}}
	if p.qemuImg == "" {
		p.qemuImg = "qemu-img"
	}
	for _, d := range []string{dirVolumes, dirSnapshots, dirRefs, dirOwners, filepath.Join(dirJournal, p.node)} {
		if err := os.MkdirAll(filepath.Join(p.root, d), 0o700); err != nil {
			return nil, newError(CodeIO, "make pool layout", err)
		}
	}
	return p, nil
}

// lock serialises operations on the named volumes inside this process; the
// names are locked in sorted order so two clones in opposite directions
// cannot deadlock. The returned func unlocks.
func (p *pool) lock(names ...string) func() {
	names = append([]string(nil), names...)
	sort.Strings(names)
	var held []*volLock
	for i, n := range names {
		if i > 0 && n == names[i-1] {
			continue
		}
		p.mu.Lock()
		l := p.locks[n]
		if l == nil {
			l = &volLock{}
			p.locks[n] = l
		}
		l.refs++
		p.mu.Unlock()
		l.mu.Lock()
		held = append(held, l)
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i := len(held) - 1; i >= 0; i-- {
			held[i].mu.Unlock()
			held[i].refs--
		}
		for n, l := range p.locks {
			if l.refs == 0 {
				delete(p.locks, n)
			}
		}
	}
}

// crashError is what the crashAt seam returns: an operation seeing it
// returns at once and skips its cleanup, as a killed agent would.
type crashError struct{ point string }

func (e *crashError) Error() string { return "volumes: injected crash at " + e.point }

func isCrash(err error) bool {
	var c *crashError
	return errors.As(err, &c)
}

// step marks a point in a multi-step change where the tests kill the agent.
func (p *pool) step(point string) error {
	if p.crashAt == nil {
		return nil
	}
	if err := p.crashAt(point); err != nil {
		return &crashError{point: point}
	}
	return nil
}

// undoOnError runs undo when *err is a real failure: a crash leaves what it
// left, for Recover to resolve.
func undoOnError(err *error, undo func()) {
	if *err != nil && !isCrash(*err) {
		undo()
	}
}

func (p *pool) path(parts ...string) string {
	return filepath.Join(append([]string{p.root}, parts...)...)
}

// tempName is a temporary name in the layout for this node; random keeps
// concurrent operations apart.
func (p *pool) tempName(name string) string {
	return ".tmp-" + p.node + "-" + name + "-" + strconv.FormatUint(uint64(randUint32()), 36)
}

// tombName is the fixed name a volume is renamed to while it is deleted,
// so Recover can find it from the journal.
func (p *pool) tombName(name string) string { return ".del-" + p.node + "-" + name }

func (p *pool) ownTemp(entry string) bool {
	return strings.HasPrefix(entry, ".tmp-"+p.node+"-") || strings.HasPrefix(entry, ".del-"+p.node+"-")
}

// listNames reads a directory and returns the volume names in it (entries
// that are valid names once suffix is cut), sorted. One getdents pass and
// one sort: a scan of 10,000 volumes in chunks re-reads the directory per
// chunk, which BenchmarkList measures.
func listNames(dir, suffix string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	names := entries[:0]
	for _, e := range entries {
		n, ok := strings.CutSuffix(e, suffix)
		if !ok || !ValidName(n) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// page cuts a sorted name list for List.
func page(names []string, after string, limit int) Page {
	i := sort.SearchStrings(names, after)
	if i < len(names) && names[i] == after {
		i++
	}
	if limit <= 0 {
		limit = 1000
	}
	end := min(i+limit, len(names))
	pg := Page{Names: append([]string(nil), names[i:end]...)}
	if end < len(names) {
		pg.Next = names[end-1]
	}
	return pg
}

func (p *pool) list(ctx context.Context, after string, limit int, suffix string) (Page, error) {
	if err := ctx.Err(); err != nil {
		return Page{}, err
	}
	if after != "" {
		if err := checkName("after", after); err != nil {
			return Page{}, err
		}
	}
	names, err := listNames(p.path(dirVolumes), suffix)
	if err != nil {
		return Page{}, newError(CodeIO, "list volumes", err)
	}
	return page(names, after, limit), nil
}

// fsyncDir makes a directory's entries (a link, rename or unlink in it)
// durable.
func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func fsyncPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// writeAtomic writes data to path through a temporary file, fsync and
// rename, so a reader sees the old content or the new, never a mix. It is
// internal/atomicfile.Write with this node's temporary name, so that on a
// shared pool a node's Recover removes its own leftovers and no one else's.
func (p *pool) writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, p.tempName(filepath.Base(path)))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return fsyncDir(dir)
}

// isNoSpace reports a full filesystem or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// ioError classifies a filesystem failure: a full disk becomes
// CodeInsufficientStorage, naming the pool.
func (p *pool) ioError(what string, err error) error {
	if isNoSpace(err) {
		return p.noSpace(what, err)
	}
	return newError(CodeIO, what, err)
}

func (p *pool) noSpace(what string, err error) error {
	msg := fmt.Sprintf("%s: pool %s is full", what, p.root)
	var st syscall.Statfs_t
	if syscall.Statfs(p.root, &st) == nil {
		msg += fmt.Sprintf(" (%d of %d bytes free)", int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize)
	}
	return newError(CodeInsufficientStorage, msg, err)
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

func quote(s string) string { return strconv.Quote(s) }

// removeTemps removes this node's temporary entries (".tmp-NODE-…",
// ".del-NODE-…") from the layout's directories with remove, after the
// journal was resolved. Other nodes' are left alone.
func (p *pool) removeTemps(remove func(path string, e fs.DirEntry) error) (int, error) {
	dirs := []string{p.path(dirVolumes), p.path(dirOwners), p.path(dirJournal, p.node)}
	snaps, err := os.ReadDir(p.path(dirSnapshots))
	if err != nil {
		return 0, newError(CodeIO, "read snapshots", err)
	}
	for _, s := range snaps {
		if s.IsDir() {
			dirs = append(dirs, p.path(dirSnapshots, s.Name()))
		}
	}
	n := 0
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return n, newError(CodeIO, "read "+dir, err)
		}
		for _, e := range entries {
			if !p.ownTemp(e.Name()) {
				continue
			}
			if err := remove(filepath.Join(dir, e.Name()), e); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, newError(CodeIO, "remove "+e.Name(), err)
			}
			n++
		}
		if err := fsyncDir(dir); err != nil {
			return n, newError(CodeIO, "sync "+dir, err)
		}
	}
	return n, nil
}

// birthTime is when a file or subvolume was made (statx btime), or its
// modification time where the filesystem does not keep one.
func birthTime(path string) time.Time {
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME|unix.STATX_MTIME, &sx); err != nil {
		return time.Time{}
	}
	if sx.Mask&unix.STATX_BTIME != 0 {
		return time.Unix(sx.Btime.Sec, int64(sx.Btime.Nsec)).UTC()
	}
	return time.Unix(sx.Mtime.Sec, int64(sx.Mtime.Nsec)).UTC()
}
