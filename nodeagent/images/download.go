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
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otherix/otherix/internal/atomicfile"
)

var (
	// errStalled is the cancel cause the stall watchdog leaves on a request.
	errStalled = errors.New("images: no bytes received within the stall timeout")
	// errTooManyRedirects ends a redirect chain early.
	errTooManyRedirects = errors.New("images: too many redirects")
)

// partialMeta is kept beside a partial download so a resume can ask the
// server, through If-Range, to send the rest only if the file is unchanged.
type partialMeta struct {
	URL          string `json:"url"`
	Validator    string `json:"validator"` // strong ETag or Last-Modified
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

// fetched is the outcome of fetch.
type fetched struct {
	digest      string
	meta        partialMeta
	notModified bool // the origin answered 304 to a conditional request
}

// download fetches url, refuses or normalises what it got and records it.
// It runs on the flight's goroutine.
func (c *Cache) download(ctx context.Context, url, want string, pull PullPolicy, progress Progress) (Image, error) {
	// A flight that finished just before this one started may have
	// recorded the image already.
	if pull != PullAlways {
		if img, ok, err := c.cached(ctx, url, want); ok || err != nil {
			return img, err
		}
	}
	name, _ := nameFromURL(url, c.maxNameLen)
	var cond *sourceRecord
	if rec, ok, _ := c.readSource(url); ok && (want == "" || rec.SHA256 == want) {
		if _, err := os.Stat(c.basePath(rec.SHA256)); err == nil {
			cond = &rec
		}
	}
	res, err := c.fetch(ctx, url, cond, progress)
	if err != nil {
		return Image{}, err
	}
	if res.notModified {
		cond.FetchedAt = c.now().UTC()
		if err := c.writeSource(*cond); err != nil {
			return Image{}, err
		}
		return c.imageOf(ctx, *cond)
	}
	if want != "" && res.digest != want {
		c.discardPartial(url)
		return Image{}, newError(CodeChecksumMismatch, fmt.Sprintf("download refused: %s served sha256 %s, want %s", url, res.digest, want), nil)
	}
	if _, err := os.Stat(c.basePath(res.digest)); err != nil {
		if err := c.normalise(ctx, c.partialPath(url), res.digest); err != nil {
			if ErrorCode(err) != CodeCacheIO && ctx.Err() == nil {
				c.discardPartial(url)
			}
			return Image{}, err
		}
	}
	c.discardPartial(url)
	rec := sourceRecord{URL: url, Name: name, SHA256: res.digest, ETag: res.meta.ETag,
		LastModified: res.meta.LastModified, FetchedAt: c.now().UTC()}
	if err := c.writeSource(rec); err != nil {
		return Image{}, err
	}
	return c.imageOf(ctx, rec)
}

func (c *Cache) imageOf(ctx context.Context, rec sourceRecord) (Image, error) {
	img, err := c.describe(ctx, rec.SHA256)
	if err != nil {
		return Image{}, err
	}
	img.Name, img.URL = rec.Name, rec.URL
	return img, nil
}

func (c *Cache) discardPartial(url string) {
	os.Remove(c.partialPath(url))
	os.Remove(c.metaPath(url))
}

// fetch brings the partial file of url to the complete content of url,
// resuming what an earlier attempt left, and returns its sha256. The file
// is synced on success. With cond, a fresh request is conditional on the
// validators cond recorded.
func (c *Cache) fetch(ctx context.Context, url string, cond *sourceRecord, progress Progress) (res fetched, err error) {
	f, err := os.OpenFile(c.partialPath(url), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return res, newError(CodeCacheIO, "open partial download", err)
	}
	defer func() {
		// An empty partial has nothing worth resuming; do not leave clutter.
		if st, serr := f.Stat(); (err != nil || res.notModified) && serr == nil && st.Size() == 0 {
			c.discardPartial(url)
		}
		f.Close()
	}()

	h := sha256.New()
	offset, validator, err := c.resumePoint(f, url, h)
	if err != nil {
		return res, err
	}
	for attempt := 0; ; attempt++ {
		var t transferResult
		t, err = c.transfer(ctx, f, url, offset, validator, cond, h, progress)
		if errors.Is(err, errRestart) && attempt == 0 {
			// The server cannot continue what we have: start from zero once.
			if err := restart(f, h); err != nil {
				return res, newError(CodeCacheIO, "truncate partial download", err)
			}
			offset, validator = 0, ""
			continue
		}
		if err != nil {
			return res, err
		}
		res.meta, res.notModified = t.meta, t.notModified
		break
	}
	if res.notModified {
		return res, nil
	}
	if err := f.Sync(); err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			c.discardPartial(url)
			return res, newError(CodeInsufficientStorage, fmt.Sprintf("download failed: pool %s ran out of space", c.pool), err)
		}
		return res, newError(CodeCacheIO, "sync partial download", err)
	}
	res.digest = hex.EncodeToString(h.Sum(nil))
	return res, nil
}

// errRestart asks fetch to drop the partial file and ask for everything.
var errRestart = errors.New("images: range not satisfiable")

// resumePoint decides where to continue and feeds the bytes already held
// into h. Without a validator from the same URL the bytes cannot be trusted
// to match what the server now has, so they are dropped.
func (c *Cache) resumePoint(f *os.File, url string, h hash.Hash) (int64, string, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, "", newError(CodeCacheIO, "stat partial download", err)
	}
	var meta partialMeta
	if b, err := os.ReadFile(c.metaPath(url)); err == nil {
		json.Unmarshal(b, &meta)
	}
	if st.Size() == 0 || st.Size() > c.maxSize || meta.URL != url || meta.Validator == "" {
		if err := restart(f, h); err != nil {
			return 0, "", newError(CodeCacheIO, "truncate partial download", err)
		}
		return 0, "", nil
	}
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		return 0, "", newError(CodeCacheIO, "hash partial download", err)
	}
	if _, err := f.Seek(st.Size(), io.SeekStart); err != nil {
		return 0, "", newError(CodeCacheIO, "seek partial download", err)
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

type transferResult struct {
	meta        partialMeta
	notModified bool
}

// transfer makes one GET and appends its body to f, which holds offset
// bytes already. No byte of a response body ever goes into an error: the
// agent may have been pointed at a service that answers with secrets.
func (c *Cache) transfer(ctx context.Context, f *os.File, url string, offset int64, validator string, cond *sourceRecord, h hash.Hash, progress Progress) (transferResult, error) {
	var res transferResult
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The watchdog covers the wait for headers as well as each body read;
	// every byte received pushes it back.
	watchdog := time.AfterFunc(c.stall, func() { cancel(errStalled) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
	if err != nil {
		return res, newError(CodeURLInvalid, "build request", err)
	}
	// Transparent gzip would make byte offsets meaningless for Range.
	req.Header.Set("Accept-Encoding", "identity")
	switch {
	case offset > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		req.Header.Set("If-Range", validator)
	case cond != nil && cond.ETag != "":
		req.Header.Set("If-None-Match", cond.ETag)
	case cond != nil && cond.LastModified != "":
		req.Header.Set("If-Modified-Since", cond.LastModified)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return res, c.transferError(ctx, reqCtx, url, CodeUnreachable, "connect", err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// The file changed or the server ignores Range: start over
			// with this very response.
			if err := restart(f, h); err != nil {
				return res, newError(CodeCacheIO, "truncate partial download", err)
			}
			offset = 0
		}
	case resp.StatusCode == http.StatusNotModified && cond != nil && offset == 0:
		res.notModified = true
		return res, nil
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != offset {
			return res, errRestart
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0:
		return res, errRestart
	case resp.StatusCode == http.StatusNotFound:
		c.discardPartial(url)
		return res, newError(CodeNotFound, "download failed: HTTP 404", nil)
	default:
		return res, newError(CodeDownloadFailed, fmt.Sprintf("download failed: HTTP %d", resp.StatusCode), nil)
	}

	remaining := resp.ContentLength
	total := int64(-1)
	if remaining >= 0 {
		total = offset + remaining
		if total > c.maxSize {
			c.discardPartial(url)
			return res, newError(CodeTooLarge, fmt.Sprintf("download refused: the image is %d bytes, the limit is %d", total, c.maxSize), nil)
		}
		free, err := c.freeSpace(c.dir)
		if err != nil {
			return res, newError(CodeCacheIO, "free space of pool", err)
		}
		if remaining > free {
			c.discardPartial(url)
			return res, newError(CodeInsufficientStorage, fmt.Sprintf("download refused: the image needs %d more bytes, pool %s has %d free", remaining, c.pool, free), nil)
		}
	}
	if res.meta, err = c.saveMeta(url, resp.Header); err != nil {
		return res, err
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
			// The cap holds without a Content-Length (or with a false one).
			if done+int64(n) > c.maxSize {
				c.discardPartial(url)
				return res, newError(CodeTooLarge, fmt.Sprintf("download refused: the image exceeds the limit of %d bytes", c.maxSize), nil)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
					// A partial file on a full pool is not worth resuming:
					// it holds the space others need.
					c.discardPartial(url)
					return res, newError(CodeInsufficientStorage, fmt.Sprintf("download failed: pool %s ran out of space after %d bytes", c.pool, done), err)
				}
				return res, newError(CodeCacheIO, "write partial download", err)
			}
			h.Write(buf[:n])
			done += int64(n)
			if progress != nil {
				progress(done, total)
			}
		}
		if rerr == io.EOF {
			return res, nil
		}
		if rerr != nil {
			return res, c.transferError(ctx, reqCtx, url, CodeDownloadFailed, "read", rerr)
		}
	}
}

// transferError tells a refused destination, a stall and the caller's
// cancellation apart from a network failure, which is reported with code.
func (c *Cache) transferError(ctx, reqCtx context.Context, url, code, what string, err error) error {
	var refused *refusedError
	switch {
	case errors.As(err, &refused):
		return newError(CodeDownloadRefused, fmt.Sprintf("download refused: %s (an operator may allow it with --image-allow)", refused), nil)
	case errors.Is(err, errTooManyRedirects):
		return newError(CodeDownloadFailed, "download failed: too many redirects", nil)
	case errors.Is(context.Cause(reqCtx), errStalled):
		return newError(CodeDownloadStalled, fmt.Sprintf("download failed: no data from %s for %s", hostOf(url), c.stall), nil)
	case ctx.Err() != nil:
		return fmt.Errorf("images: download %s: %w", url, ctx.Err())
	}
	return newError(code, fmt.Sprintf("download failed: %s %s", what, hostOf(url)), netCause(err))
}

// netCause keeps the innermost cause of a transport error (connection
// refused, no such host, a TLS failure) without the request line around it.
func netCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// hostOf is the host[:port] of rawURL for messages, without user info.
func hostOf(rawURL string) string {
	u, err := neturl.Parse(rawURL)
	if err != nil {
		return "the origin"
	}
	return u.Host
}

// saveMeta records the validators of the response being written: a resume
// uses them in If-Range (where a weak ETag may not be used), and the source
// record keeps them for a conditional request later.
func (c *Cache) saveMeta(url string, hdr http.Header) (partialMeta, error) {
	meta := partialMeta{URL: url, ETag: hdr.Get("ETag"), LastModified: hdr.Get("Last-Modified")}
	if meta.ETag != "" && !strings.HasPrefix(meta.ETag, "W/") {
		meta.Validator = meta.ETag
	} else if meta.LastModified != "" {
		meta.Validator = meta.LastModified
	}
	b, _ := json.Marshal(meta)
	if err := atomicfile.Write(c.metaPath(url), b, 0o644); err != nil {
		return meta, newError(CodeCacheIO, "write partial metadata", err)
	}
	return meta, nil
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
