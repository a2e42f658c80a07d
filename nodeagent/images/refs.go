package images

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/otherix/otherix/nodeagent/qcow2"
)

// maxChainDepth bounds how far a backing chain is followed: a loop of
// backing files (a hostile or broken disk) must not hang a scan.
const maxChainDepth = 32

// chainLink is one backing file of a disk's chain, as the headers name it.
type chainLink struct {
	path string // absolute, as resolved against the naming file's directory
	id   fileKey
	ok   bool // the file exists and id is set
}

// fileKey identifies a file whatever path names it (hard links, symlinks,
// relative backing names): a disk's chain uses a base if a backing file in
// it is the base's file.
type fileKey struct{ dev, ino uint64 }

func keyOf(p string) (fileKey, bool) {
	st, err := os.Stat(p)
	if err != nil {
		return fileKey{}, false
	}
	id, ok := fileIDOf(st)
	return fileKey{id.dev, id.ino}, ok
}

// walkDisks calls fn for every qcow2 file under the disk directories with
// the backing chain its headers name. The chain is read from the qcow2
// headers (nodeagent/qcow2), never guessed from file names; files that are
// not qcow2 (seed ISOs, raw volumes) have no chain and are skipped.
//
// stop, if set, ends a chain at a file it names (a base, which has no
// backing file to follow): the scan then reads one header per disk.
func (c *Cache) walkDisks(stop func(fileKey) bool, fn func(disk string, chain []chainLink)) error {
	for _, root := range c.diskDirs {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() || strings.Contains(d.Name(), ".tmp-") {
				return nil
			}
			chain := readChain(p, stop)
			if len(chain) > 0 {
				fn(p, chain)
			}
			return nil
		})
		if err != nil {
			return newError(CodeCacheIO, "scan vm disks", err)
		}
	}
	return nil
}

// readChain follows p's backing files as far as they go.
func readChain(p string, stop func(fileKey) bool) []chainLink {
	var chain []chainLink
	cur := p
	for range maxChainDepth {
		h, err := qcow2.Read(cur)
		if err != nil || h.BackingFile == "" || strings.HasPrefix(h.BackingFile, "json:") {
			return chain
		}
		b := h.BackingFile
		if !filepath.IsAbs(b) {
			b = filepath.Join(filepath.Dir(cur), b)
		}
		b = filepath.Clean(b)
		l := chainLink{path: b}
		l.id, l.ok = keyOf(b)
		chain = append(chain, l)
		if !l.ok || stop != nil && stop(l.id) {
			return chain
		}
		cur = b
	}
	return chain
}

// references maps each base's digest to the disks whose chain uses it.
func (c *Cache) references() (map[string][]string, error) {
	bases, err := c.baseKeys()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	isBase := func(k fileKey) bool { _, ok := bases[k]; return ok }
	err = c.walkDisks(isBase, func(disk string, chain []chainLink) {
		seen := map[string]bool{}
		for _, l := range chain {
			if d, ok := bases[l.id]; ok && l.ok && !seen[d] {
				seen[d] = true
				out[d] = append(out[d], disk)
			}
		}
	})
	return out, err
}

// baseKeys maps the file identity of every committed base to its digest.
func (c *Cache) baseKeys() (map[fileKey]string, error) {
	entries, err := os.ReadDir(filepath.Join(c.dir, dirBases))
	if err != nil {
		return nil, newError(CodeCacheIO, "read bases directory", err)
	}
	out := map[fileKey]string{}
	for _, e := range entries {
		digest, ok := strings.CutSuffix(e.Name(), ".qcow2")
		if !ok || !isDigest(digest) {
			continue
		}
		if k, ok := keyOf(filepath.Join(c.dir, dirBases, e.Name())); ok {
			out[k] = digest
		}
	}
	return out, nil
}
