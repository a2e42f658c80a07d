package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/otherix/otherix/internal/atomicfile"
)

// migrateJournal is the file that records a legacy-layout migration in
// progress, so an agent killed in the middle finishes it on its next start.
const migrateJournal = "migrate.json"

// RebaseHook tells the rest of the agent that disk, once backed by
// oldBase, is now backed by newBase in format newFormat: the VM records
// that name the base QEMU is started with must follow. It must be
// idempotent: after a crash it is called again for the same disk.
type RebaseHook func(disk, oldBase, newBase, newFormat string) error

// MigrateReport says what MigrateLegacy did.
type MigrateReport struct {
	// Migrated are the legacy files moved into bases/, by name.
	Migrated []string
	// Rebased are the VM disks rebased onto a content-keyed base.
	Rebased []string
	// Kept are legacy files left in place, with the reason: a disk that
	// could not be rebased (a running VM holds its lock: the next agent
	// start retries) or a file that is not an image the cache accepts.
	Kept map[string]string
}

// journal is the content of migrate.json: one legacy file at a time.
type journal struct {
	Legacy string        `json:"legacy"` // the file's name at the top of the cache
	Digest string        `json:"digest"` // sha256 of its bytes: its base's name
	Format string        `json:"format"` // its format: qcow2 is linked, raw converted
	Disks  []journalDisk `json:"disks"`
}

type journalDisk struct {
	Path string `json:"path"`
	Done bool   `json:"done"` // rebased and the hook told
}

// errMigrateStop is what a test's kill point returns to stop the migration
// where a kill -9 would have: nothing after it runs, nothing is undone.
var errMigrateStop = errors.New("images: migration stopped at a kill point")

// MigrateLegacy moves the images of the layout before content keys (one
// file per URL basename at the top of the cache) into bases/<sha256>.qcow2
// and rebases every VM disk whose header names one as its backing file
// onto the new path with `qemu-img rebase -u` (an unsafe rebase: the base
// holds the same guest data, so only the header changes). A legacy qcow2
// that passes the checks a download would is hard-linked (no copy); a raw
// one is converted. Each step is journaled first, so a migration the
// agent was killed in is resumed on the next call. Run it at agent start,
// before any VM actor: hook rewrites VM records.
//
// A legacy file stays while any disk still names it (a disk a running
// QEMU holds locked cannot be rebased); the next start retries.
func (c *Cache) MigrateLegacy(ctx context.Context, hook RebaseHook) (MigrateReport, error) {
	c.gcMu.Lock()
	defer c.gcMu.Unlock()
	rep := MigrateReport{Kept: map[string]string{}}
	if j, ok, err := c.readJournal(); err != nil {
		return rep, err
	} else if ok {
		if err := c.migrateOne(ctx, &j, hook, &rep); err != nil {
			return rep, err
		}
	}
	for _, name := range c.LegacyFiles() {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		j, why, err := c.planLegacy(ctx, name)
		if err != nil {
			return rep, err
		}
		if why != "" {
			rep.Kept[name] = why
			continue
		}
		if err := c.writeJournal(j); err != nil {
			return rep, err
		}
		if err := c.killPoint("journaled"); err != nil {
			return rep, err
		}
		if err := c.migrateOne(ctx, &j, hook, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// planLegacy judges the legacy file name and finds the disks backed by it.
// A file the cache would not accept as a download is kept, with why.
func (c *Cache) planLegacy(ctx context.Context, name string) (j journal, why string, err error) {
	p := filepath.Join(c.dir, name)
	format, err := detectFormat(p)
	if err != nil {
		if ErrorCode(err) == CodeCacheIO {
			return j, "", err
		}
		return j, "not an image the cache accepts: " + err.Error(), nil
	}
	if format == formatQCOW2 {
		if err := c.checkLegacyQCOW2(ctx, p); err != nil {
			if ErrorCode(err) == CodeCacheIO {
				return j, "", err
			}
			return j, "not an image the cache accepts: " + err.Error(), nil
		}
	}
	digest, err := fileSHA256(p)
	if err != nil {
		return j, "", newError(CodeCacheIO, "hash legacy image", err)
	}
	j = journal{Legacy: name, Digest: digest, Format: format}
	key, _ := keyOf(p)
	err = c.walkDisks(nil, func(disk string, chain []chainLink) {
		// Only a disk's own backing file: a disk deeper in the chain is
		// itself a disk of these directories, and rebased in its turn.
		if l := chain[0]; l.path == p || (l.ok && l.id == key) {
			j.Disks = append(j.Disks, journalDisk{Path: disk})
		}
	})
	return j, "", err
}

// checkLegacyQCOW2 holds a legacy qcow2 to what a download must pass before
// it may become a base: it will be linked, not rewritten.
func (c *Cache) checkLegacyQCOW2(ctx context.Context, p string) error {
	if _, err := checkQCOW2Header(p, c.maxSize); err != nil {
		return err
	}
	info, err := c.info(ctx, formatQCOW2, p)
	if err != nil {
		return err
	}
	if err := info.check(formatQCOW2, c.maxSize); err != nil {
		return err
	}
	return c.checkConsistent(ctx, p)
}

// migrateOne carries out (or resumes) the journaled migration of j.
func (c *Cache) migrateOne(ctx context.Context, j *journal, hook RebaseHook, rep *MigrateReport) error {
	legacy := filepath.Join(c.dir, j.Legacy)
	base := c.basePath(j.Digest)
	if _, err := os.Stat(base); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return newError(CodeCacheIO, "stat base", err)
		}
		if err := c.adoptLegacy(ctx, legacy, j); err != nil {
			return err
		}
	}
	if err := c.killPoint("base"); err != nil {
		return err
	}
	kept := ""
	for i := range j.Disks {
		d := &j.Disks[i]
		if d.Done {
			continue
		}
		if err := c.killPoint("rebase"); err != nil {
			return err
		}
		if err := c.rebaseUnsafe(ctx, d.Path, base); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				// The VM was deleted meanwhile.
				d.Done = true
				continue
			}
			kept = fmt.Sprintf("disk %s not rebased: %v", d.Path, err)
			continue
		}
		if err := c.killPoint("rebased"); err != nil {
			return err
		}
		if hook != nil {
			if err := hook(d.Path, legacy, base, formatQCOW2); err != nil {
				return fmt.Errorf("images: migrate %s: record the new base of %s: %w", j.Legacy, d.Path, err)
			}
		}
		d.Done = true
		rep.Rebased = append(rep.Rebased, d.Path)
		if err := c.writeJournal(*j); err != nil {
			return err
		}
	}
	if err := c.addAlias(j.Digest, j.Legacy); err != nil {
		return err
	}
	if kept != "" {
		// The legacy file stays for the disk still naming it; the next
		// start plans it again and finds only that disk.
		rep.Kept[j.Legacy] = kept
		return c.removeJournal()
	}
	if err := c.killPoint("remove"); err != nil {
		return err
	}
	// The old layout's companions of the file go with it.
	for _, p := range []string{legacy, filepath.Join(c.dir, "."+j.Legacy+".sha256"),
		filepath.Join(c.dir, "."+j.Legacy+".partial"), filepath.Join(c.dir, "."+j.Legacy+".partial.meta")} {
		if err := removeIfExists(p); err != nil {
			return newError(CodeCacheIO, "remove legacy image", err)
		}
	}
	if err := syncDir(c.dir); err != nil {
		return newError(CodeCacheIO, "sync cache directory", err)
	}
	rep.Migrated = append(rep.Migrated, j.Legacy)
	return c.removeJournal()
}

// adoptLegacy makes the base of j from the legacy file: a hard link for a
// qcow2 (checked when planned), a conversion for a raw image.
func (c *Cache) adoptLegacy(ctx context.Context, legacy string, j *journal) error {
	if j.Format != formatQCOW2 {
		return c.normalise(ctx, legacy, j.Digest)
	}
	if err := os.Link(legacy, c.basePath(j.Digest)); err != nil && !errors.Is(err, fs.ErrExist) {
		return newError(CodeCacheIO, "link legacy image into bases", err)
	}
	if err := syncDir(filepath.Join(c.dir, dirBases)); err != nil {
		return newError(CodeCacheIO, "sync bases directory", err)
	}
	return nil
}

// rebaseUnsafe points disk's header at base (qcow2) without touching its
// data. qemu-img takes the image's write lock, so a disk a running QEMU
// holds is refused rather than changed under it.
func (c *Cache) rebaseUnsafe(ctx context.Context, disk, base string) error {
	if _, err := os.Stat(disk); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, c.qemuImg, "rebase", "-u", "-f", formatQCOW2, "-F", formatQCOW2, "-b", base, disk)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("qemu-img rebase: %s: %w", strings.TrimSpace(stderr.String()), err)
	}
	return syncFile(disk)
}

func (c *Cache) killPoint(step string) error {
	if c.migrateHook != nil {
		return c.migrateHook(step)
	}
	return nil
}

func (c *Cache) readJournal() (journal, bool, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, migrateJournal))
	if errors.Is(err, fs.ErrNotExist) {
		return journal{}, false, nil
	}
	if err != nil {
		return journal{}, false, newError(CodeCacheIO, "read migration journal", err)
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil || !isDigest(j.Digest) || !validLegacyName(j.Legacy) {
		// A journal is written atomically: one that does not parse was not
		// written by us. Planning afresh is always correct, only slower.
		return journal{}, false, c.removeJournal()
	}
	return j, true, nil
}

func (c *Cache) writeJournal(j journal) error {
	b, err := json.Marshal(j)
	if err != nil {
		return newError(CodeCacheIO, "encode migration journal", err)
	}
	if err := atomicfile.Write(filepath.Join(c.dir, migrateJournal), b, 0o644); err != nil {
		return newError(CodeCacheIO, "write migration journal", err)
	}
	return nil
}

func (c *Cache) removeJournal() error {
	if err := removeIfExists(filepath.Join(c.dir, migrateJournal)); err != nil {
		return newError(CodeCacheIO, "remove migration journal", err)
	}
	return syncDir(c.dir)
}

// validLegacyName is a file name the old layout could have written at the
// top of the cache: no separators, not hidden, not our own journal.
func validLegacyName(name string) bool {
	return name != "" && name != migrateJournal && !strings.HasPrefix(name, ".") &&
		!strings.ContainsAny(name, "/\x00") && filepath.Base(name) == name
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
