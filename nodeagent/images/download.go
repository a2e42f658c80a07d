package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otherix/otherix/internal/atomicfile"
)

// errStalled is the cancel cause the stall watchdog leaves on a request.
var errStalled = errors.New("images: no bytes received within the stall timeout")

// partialMeta is kept beside a partial download so a resume can ask the
// server, through If-Range, to send the rest only if the file is unchanged.
type partialMeta struct {
	URL       string `json:"url"`
	Validator string `json:"validator"` // strong ETag or Last-Modified
}

// download fetches url into the pool as name and commits it. It runs on the
// flight's goroutine.
func (c *Cache) download(ctx context.Context, name, url, want string, progress Progress) (Image, error) {
	// A flight that finished just before this one started may have
	// committed the image already.
	if img, ok, err := c.cached(ctx, name); ok || err != nil {
		return img, err
	}
	digest, err := c.fetch(ctx, name, url, progress)
	if err != nil {
		return Image{}, err
	}
	partial := c.partialPath(name)
	if want != "" && digest != want {
		c.discardPartial(name)
		return Image{}, newError(CodeChecksumMismatch, fmt.Sprintf("downloaded %s has sha256 %s, want %s", name, digest, want), nil)
	}
	format, err := detectFormat(partial)
	if err != nil {
		if ErrorCode(err) == CodeInvalidFormat {
			c.discardPartial(name)
		}
		return Image{}, err
	}
	vsize, err := inspect(ctx, c.qemuImg, partial, format)
	if err != nil {
		if ErrorCode(err) == CodeInvalidFormat {
			c.discardPartial(name)
		}
		return Image{}, err
	}
	// The sidecar goes first: once the image has its real name, a reader
	// must find its digest without hashing gigabytes.
	if err := atomicfile.Write(c.shaPath(name), []byte(digest+"\n"), 0o644); err != nil {
		return Image{}, newError(CodeCacheIO, "write digest of "+name, err)
	}
	if err := os.Rename(partial, c.path(name)); err != nil {
		return Image{}, newError(CodeCacheIO, "commit "+name, err)
	}
	os.Remove(c.metaPath(name))
	if err := syncDir(c.dir); err != nil {
		return Image{}, newError(CodeCacheIO, "sync pool directory", err)
	}
	st, err := os.Stat(c.path(name))
	if err != nil {
		return Image{}, newError(CodeCacheIO, "stat "+name, err)
	}
	img := Image{
		Pool: c.pool, Name: name, Path: c.path(name), Format: format,
		SizeBytes: st.Size(), VirtualSize: vsize, SHA256: digest,
	}
	c.remember(name, st, img)
	return img, nil
}

func (c *Cache) discardPartial(name string) {
	os.Remove(c.partialPath(name))
	os.Remove(c.metaPath(name))
}

// fetch brings the partial file of name to the complete content of url,
// resuming what an earlier attempt left, and returns its sha256. The file
// is synced on success.
func (c *Cache) fetch(ctx context.Context, name, url string, progress Progress) (digest string, err error) {
	f, err := os.OpenFile(c.partialPath(name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", newError(CodeCacheIO, "open partial "+name, err)
	}
	defer func() {
		// An empty partial has nothing worth resuming; do not leave clutter.
		if st, serr := f.Stat(); err != nil && serr == nil && st.Size() == 0 {
			c.discardPartial(name)
		}
		f.Close()
	}()

	h := sha256.New()
	offset, validator, err := c.resumePoint(f, name, url, h)
	if err != nil {
		return "", err
	}
	for attempt := 0; ; attempt++ {
		err := c.transfer(ctx, f, name, url, offset, validator, h, progress)
		if errors.Is(err, errRestart) && attempt == 0 {
			// The server cannot continue what we have: start from zero once.
			if err := restart(f, h); err != nil {
				return "", newError(CodeCacheIO, "truncate partial "+name, err)
			}
			offset, validator = 0, ""
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if err := f.Sync(); err != nil {
		return "", newError(CodeCacheIO, "sync partial "+name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// errRestart asks fetch to drop the partial file and ask for everything.
var errRestart = errors.New("images: range not satisfiable")

// resumePoint decides where to continue and feeds the bytes already held
// into h. Without a validator from the same URL the bytes cannot be trusted
// to match what the server now has, so they are dropped.
func (c *Cache) resumePoint(f *os.File, name, url string, h hash.Hash) (int64, string, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, "", newError(CodeCacheIO, "stat partial "+name, err)
	}
	var meta partialMeta
	if b, err := os.ReadFile(c.metaPath(name)); err == nil {
		json.Unmarshal(b, &meta)
	}
	if st.Size() == 0 || meta.URL != url || meta.Validator == "" {
		if err := restart(f, h); err != nil {
			return 0, "", newError(CodeCacheIO, "truncate partial "+name, err)
		}
		return 0, "", nil
	}
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		return 0, "", newError(CodeCacheIO, "hash partial "+name, err)
	}
	if _, err := f.Seek(st.Size(), io.SeekStart); err != nil {
		return 0, "", newError(CodeCacheIO, "seek partial "+name, err)
	}
	return st.Size(), meta.Validator, nil
}

func restart(f *os.File, h hash.Hash) error {
	h.Reset()
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// transfer makes one GET and appends its body to f, which holds offset
// bytes already.
func (c *Cache) transfer(ctx context.Context, f *os.File, name, url string, offset int64, validator string, h hash.Hash, progress Progress) error {
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The watchdog covers the wait for headers as well as each body read;
	// every byte received pushes it back.
	watchdog := time.AfterFunc(c.stall, func() { cancel(errStalled) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
	if err != nil {
		return newError(CodeURLInvalid, "build request", err)
	}
	// Transparent gzip would make byte offsets meaningless for Range.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		req.Header.Set("If-Range", validator)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return c.transferError(ctx, reqCtx, name, CodeUnreachable, "get "+url, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// The file changed or the server ignores Range: start over
			// with this very response.
			if err := restart(f, h); err != nil {
				return newError(CodeCacheIO, "truncate partial "+name, err)
			}
			offset = 0
		}
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != offset {
			return errRestart
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0:
		return errRestart
	case resp.StatusCode == http.StatusNotFound:
		c.discardPartial(name)
		return newError(CodeNotFound, fmt.Sprintf("%s: HTTP 404", url), nil)
	default:
		return newError(CodeDownloadFailed, fmt.Sprintf("%s: HTTP %d", url, resp.StatusCode), nil)
	}

	remaining := resp.ContentLength
	total := int64(-1)
	if remaining >= 0 {
		total = offset + remaining
		free, err := c.freeSpace(c.dir)
		if err != nil {
			return newError(CodeCacheIO, "free space of pool", err)
		}
		if remaining > free {
			c.discardPartial(name)
			return newError(CodeTooLarge, fmt.Sprintf("%s needs %d more bytes, pool %s has %d free", name, remaining, c.pool, free), nil)
		}
	}
	if err := c.saveMeta(name, url, resp.Header); err != nil {
		return err
	}

	done := offset
	if progress != nil {
		progress(done, total)
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			watchdog.Reset(c.stall)
			if _, err := f.Write(buf[:n]); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					c.discardPartial(name)
					return newError(CodeTooLarge, fmt.Sprintf("pool %s ran out of space", c.pool), err)
				}
				return newError(CodeCacheIO, "write partial "+name, err)
			}
			h.Write(buf[:n])
			done += int64(n)
			if progress != nil {
				progress(done, total)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return c.transferError(ctx, reqCtx, name, CodeDownloadFailed, "read body of "+url, rerr)
		}
	}
}

// transferError tells a stall and the caller's cancellation apart from a
// network failure, which is reported with code.
func (c *Cache) transferError(ctx, reqCtx context.Context, name, code, msg string, err error) error {
	if errors.Is(context.Cause(reqCtx), errStalled) {
		return newError(CodeDownloadStalled, fmt.Sprintf("%s: no data for %s", name, c.stall), err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("images: download %s: %w", name, ctx.Err())
	}
	return newError(code, msg, err)
}

// saveMeta records the validator of the response being written so that a
// later resume can use If-Range. A weak ETag may not be used there.
func (c *Cache) saveMeta(name, url string, hdr http.Header) error {
	meta := partialMeta{URL: url}
	if etag := hdr.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		meta.Validator = etag
	} else if lm := hdr.Get("Last-Modified"); lm != "" {
		meta.Validator = lm
	}
	b, _ := json.Marshal(meta)
	if err := atomicfile.Write(c.metaPath(name), b, 0o644); err != nil {
		return newError(CodeCacheIO, "write partial metadata of "+name, err)
	}
	return nil
}

// rangeStart parses the first byte position of "bytes first-last/total".
func rangeStart(contentRange string) (int64, bool) {
	s, ok := strings.CutPrefix(contentRange, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	return n, err == nil
}
