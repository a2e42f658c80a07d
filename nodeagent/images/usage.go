package images

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/otherix/otherix/internal/atomicfile"
)

// dirUsage holds one usage record per base: usage/<sha256>.json.
const dirUsage = "usage"

// usageRecord is what the cache keeps of a base beyond its file: when a VM
// was last made from it (the LRU order of eviction) and the names it had
// in the layout before content keys, for people to recognise it.
type usageRecord struct {
	LastUsed time.Time `json:"last_used"`
	// Aliases are the basenames the base had at the top of the cache
	// before the migration to content keys.
	Aliases []string `json:"aliases,omitempty"`
}

func (c *Cache) usagePath(digest string) string {
	return filepath.Join(c.dir, dirUsage, digest+".json")
}

// readUsage loads digest's usage record; a missing or unreadable one is
// the zero record (the base's file time then stands in for last use).
func (c *Cache) readUsage(digest string) usageRecord {
	var u usageRecord
	b, err := os.ReadFile(c.usagePath(digest))
	if err == nil {
		_ = json.Unmarshal(b, &u)
	}
	return u
}

func (c *Cache) writeUsage(digest string, u usageRecord) error {
	b, err := json.Marshal(u)
	if err != nil {
		return newError(CodeCacheIO, "encode usage record", err)
	}
	if err := atomicfile.Write(c.usagePath(digest), b, 0o644); err != nil {
		return newError(CodeCacheIO, "write usage record", err)
	}
	return nil
}

// MarkUsed records that a VM is being made from the base digest now: the
// base moves to the young end of the eviction order.
func (c *Cache) MarkUsed(digest string) error {
	if !isDigest(digest) {
		return newError(CodeSHA256Invalid, "not a sha256 digest", nil)
	}
	c.usageMu.Lock()
	defer c.usageMu.Unlock()
	u := c.readUsage(digest)
	u.LastUsed = c.now().UTC()
	return c.writeUsage(digest, u)
}

// addAlias records a legacy basename of digest.
func (c *Cache) addAlias(digest, alias string) error {
	c.usageMu.Lock()
	defer c.usageMu.Unlock()
	u := c.readUsage(digest)
	if slices.Contains(u.Aliases, alias) {
		return nil
	}
	u.Aliases = append(u.Aliases, alias)
	slices.Sort(u.Aliases)
	if u.LastUsed.IsZero() {
		u.LastUsed = c.now().UTC()
	}
	return c.writeUsage(digest, u)
}

// lastUsed is the base's last use: its record, or else its file's time.
func (c *Cache) lastUsed(digest string, u usageRecord) time.Time {
	if !u.LastUsed.IsZero() {
		return u.LastUsed
	}
	if st, err := os.Stat(c.basePath(digest)); err == nil {
		return st.ModTime().UTC()
	}
	return time.Time{}
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}
