package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// defaultEvictGrace keeps a base that was used (fetched, checked or made a
// VM from) this recently out of eviction: a VM create holds no lock
// between Ensure and the disk it then builds on the base.
const defaultEvictGrace = 5 * time.Minute

// CachedBase is a base with what the cache knows of its use.
type CachedBase struct {
	Image
	// Aliases are the file names the base is known by: the basenames of
	// the URLs that served it and its names in the old layout.
	Aliases []string
	// URLs are the sources that served it.
	URLs []string
	// LastUsed is when a VM was last made from it (or it was fetched).
	LastUsed time.Time
	// Users are the VM disks whose backing chain uses it.
	Users []string
}

// Inventory lists the committed bases with their aliases, last use and the
// disks that use them (a scan of the disk directories' qcow2 headers).
func (c *Cache) Inventory(ctx context.Context) ([]CachedBase, error) {
	list, err := c.List()
	if err != nil {
		return nil, err
	}
	srcs, err := c.sourcesAll()
	if err != nil {
		return nil, err
	}
	refs, err := c.references()
	if err != nil {
		return nil, err
	}
	out := make([]CachedBase, 0, len(list))
	for _, img := range list {
		u := c.readUsage(img.SHA256)
		b := CachedBase{Image: img, LastUsed: c.lastUsed(img.SHA256, u), Users: refs[img.SHA256]}
		for _, r := range srcs[img.SHA256] {
			b.URLs = append(b.URLs, r.URL)
			b.Aliases = append(b.Aliases, r.Name)
		}
		b.Aliases = append(b.Aliases, u.Aliases...)
		slices.Sort(b.Aliases)
		b.Aliases = slices.Compact(b.Aliases)
		slices.Sort(b.URLs)
		slices.Sort(b.Users)
		out = append(out, b)
	}
	return out, nil
}

// Delete removes the base digest and its records. It refuses with
// CodeInUse while a VM disk's backing chain uses the base, and with
// CodeNotFound when no such base is cached.
func (c *Cache) Delete(ctx context.Context, digest string) error {
	if !isDigest(digest) {
		return newError(CodeSHA256Invalid, fmt.Sprintf("%q is not a lower-case sha256 digest", digest), nil)
	}
	c.gcMu.Lock()
	defer c.gcMu.Unlock()
	if _, err := os.Stat(c.basePath(digest)); err != nil {
		return newError(CodeNotFound, "no cached image has sha256 "+digest, nil)
	}
	refs, err := c.references()
	if err != nil {
		return err
	}
	if users := refs[digest]; len(users) > 0 {
		return newError(CodeInUse, fmt.Sprintf("image %s is the backing file of %d vm disk(s)", digest, len(users)), nil)
	}
	return c.removeBase(digest)
}

// removeBase forgets the sources that name digest first (no Ensure finds
// it any more), then removes the base and its usage record. A crash in
// between leaves a base without sources, which List shows and the next
// eviction or Delete removes.
func (c *Cache) removeBase(digest string) error {
	srcs, err := c.sourcesAll()
	if err != nil {
		return err
	}
	for _, r := range srcs[digest] {
		if err := removeIfExists(c.sourcePath(r.URL)); err != nil {
			return newError(CodeCacheIO, "remove source record", err)
		}
	}
	if err := removeIfExists(c.basePath(digest)); err != nil {
		return newError(CodeCacheIO, "remove base", err)
	}
	if err := removeIfExists(c.usagePath(digest)); err != nil {
		return newError(CodeCacheIO, "remove usage record", err)
	}
	c.mu.Lock()
	delete(c.described, digest)
	delete(c.handed, digest)
	c.mu.Unlock()
	return syncDir(filepath.Join(c.dir, dirBases))
}

// Evict removes unused bases, least recently used first, until the bases
// take at most the cache's size limit. A base that a disk's chain uses, or
// that was used within the grace period, is never evicted, even if the
// limit stays exceeded. It returns the digests evicted.
func (c *Cache) Evict(ctx context.Context) ([]string, error) {
	if c.maxCache <= 0 {
		return nil, nil
	}
	c.gcMu.Lock()
	defer c.gcMu.Unlock()
	entries, err := os.ReadDir(filepath.Join(c.dir, dirBases))
	if err != nil {
		return nil, newError(CodeCacheIO, "read bases directory", err)
	}
	type cand struct {
		digest string
		size   int64
		used   time.Time
	}
	var total int64
	var cands []cand
	for _, e := range entries {
		digest, ok := strings.CutSuffix(e.Name(), ".qcow2")
		if !ok || !isDigest(digest) {
			continue
		}
		st, err := os.Stat(c.basePath(digest))
		if err != nil {
			continue
		}
		total += st.Size()
		cands = append(cands, cand{digest, st.Size(), c.lastUsed(digest, c.readUsage(digest))})
	}
	if total <= c.maxCache {
		return nil, nil
	}
	refs, err := c.references()
	if err != nil {
		return nil, err
	}
	sort.Slice(cands, func(i, j int) bool {
		if !cands[i].used.Equal(cands[j].used) {
			return cands[i].used.Before(cands[j].used)
		}
		return cands[i].digest < cands[j].digest
	})
	cutoff := c.now().Add(-c.evictGrace)
	var evicted []string
	for _, k := range cands {
		if total <= c.maxCache || ctx.Err() != nil {
			break
		}
		if len(refs[k.digest]) > 0 || k.used.After(cutoff) || c.handedAt(k.digest).After(cutoff) {
			continue
		}
		if err := c.removeBase(k.digest); err != nil {
			return evicted, err
		}
		total -= k.size
		evicted = append(evicted, k.digest)
	}
	return evicted, nil
}

// evictLoop runs Evict every interval until the cache is closed.
func (c *Cache) evictLoop(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.evictLogged()
		}
	}
}

// evictLogged evicts and reports the outcome through the Evicted hook.
func (c *Cache) evictLogged() {
	got, err := c.Evict(c.ctx)
	if c.onEvict != nil && (len(got) > 0 || err != nil) {
		c.onEvict(got, err)
	}
}
