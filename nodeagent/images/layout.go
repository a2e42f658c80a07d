package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/otherix/otherix/internal/atomicfile"
	"github.com/otherix/otherix/messages"
)

// The cache's subdirectories (see the package documentation).
const (
	dirBases   = "bases"
	dirSources = "sources"
	dirPartial = "partial"
	dirTmp     = "tmp"
)

// defaultSupernet is denied to downloads until the control plane's
// settings name the cluster's own.
var defaultSupernet = netip.MustParsePrefix(messages.DefaultSettings().OverlaySupernet)

// sourceRecord is what the cache knows of one source URL.
type sourceRecord struct {
	URL    string `json:"url"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"` // of the bytes served; names the base
	// ETag and LastModified are the origin's validators, for a conditional
	// request under PullAlways.
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	FetchedAt    time.Time `json:"fetched_at"`
}

// urlKey names the files of one source URL: the URL itself may be long
// and hold any byte.
func urlKey(url string) string {
	s := sha256.Sum256([]byte(url))
	return hex.EncodeToString(s[:])
}

func (c *Cache) basePath(digest string) string {
	return filepath.Join(c.dir, dirBases, digest+".qcow2")
}
func (c *Cache) sourcePath(url string) string {
	return filepath.Join(c.dir, dirSources, urlKey(url)+".json")
}
func (c *Cache) partialPath(url string) string {
	return filepath.Join(c.dir, dirPartial, urlKey(url))
}
func (c *Cache) metaPath(url string) string { return c.partialPath(url) + ".meta" }

// readSource loads url's record; ok is false when there is none (or it is
// unreadable, which a fresh download repairs).
func (c *Cache) readSource(url string) (sourceRecord, bool, error) {
	b, err := os.ReadFile(c.sourcePath(url))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return sourceRecord{}, false, nil
		}
		return sourceRecord{}, false, newError(CodeCacheIO, "read source record", err)
	}
	var rec sourceRecord
	if json.Unmarshal(b, &rec) != nil || rec.URL != url || len(rec.SHA256) != 2*sha256.Size {
		return sourceRecord{}, false, nil
	}
	return rec, true, nil
}

func (c *Cache) writeSource(rec sourceRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return newError(CodeCacheIO, "encode source record", err)
	}
	if err := atomicfile.Write(c.sourcePath(rec.URL), b, 0o644); err != nil {
		return newError(CodeCacheIO, "write source record", err)
	}
	return nil
}

// sourcesByDigest maps each base's digest to the record of the lowest URL
// that served it, so List names a base the same way on every beat.
func (c *Cache) sourcesByDigest() (map[string]sourceRecord, error) {
	all, err := c.sourcesAll()
	if err != nil {
		return nil, err
	}
	out := make(map[string]sourceRecord, len(all))
	for d, recs := range all {
		out[d] = recs[0]
	}
	return out, nil
}

// sourcesAll maps each base's digest to the records of every URL that
// served it, lowest URL first.
func (c *Cache) sourcesAll() (map[string][]sourceRecord, error) {
	dir := filepath.Join(c.dir, dirSources)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, newError(CodeCacheIO, "read sources directory", err)
	}
	out := map[string][]sourceRecord{}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var rec sourceRecord
		if json.Unmarshal(b, &rec) != nil || rec.SHA256 == "" {
			continue
		}
		out[rec.SHA256] = append(out[rec.SHA256], rec)
	}
	for _, recs := range out {
		sort.Slice(recs, func(i, j int) bool { return recs[i].URL < recs[j].URL })
	}
	return out, nil
}
