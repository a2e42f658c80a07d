package images

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

func TestEnsureDownloadsAndCaches(t *testing.T) {
	needQemuImg(t)
	body := qcow2Image(t, "64M")
	srv, gets := serve(t, serveBytes(body))
	c := newCache(t, Options{})
	url := srv.URL + "/os/noble.img"

	var last [2]int64
	img, err := c.Ensure(context.Background(), url, digestOf(body), func(done, total int64) {
		last = [2]int64{done, total}
	})
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	st, err := os.Stat(c.basePath(digestOf(body)))
	if err != nil {
		t.Fatalf("base not committed: %v", err)
	}
	want := Image{
		Pool: "default", Name: "noble.img", URL: url, Path: c.basePath(digestOf(body)), Format: "qcow2",
		SizeBytes: st.Size(), VirtualSize: 64 << 20, SHA256: digestOf(body),
	}
	if img != want {
		t.Errorf("image = %+v\nwant    %+v", img, want)
	}
	if last != [2]int64{int64(len(body)), int64(len(body))} {
		t.Errorf("last progress = %v, want done = total = %d", last, len(body))
	}
	if got := strings.Join(dirNames(t, filepath.Join(c.dir, dirSources)), ","); got != urlKey(url)+".json" {
		t.Errorf("sources/ holds %s, want the record of the URL only", got)
	}
	for _, d := range []string{dirPartial, dirTmp} {
		if names := dirNames(t, filepath.Join(c.dir, d)); len(names) != 0 {
			t.Errorf("%s/ holds %v after a download", d, names)
		}
	}

	// A second cache on the same directory, as after an agent restart, must
	// not go to the network for the same URL, even with the server gone.
	srv.Close()
	c2, err := New("default", c.dir, Options{Allow: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	again, err := ensure(t, c2, url, digestOf(body))
	if err != nil {
		t.Fatalf("cached Ensure: %v", err)
	}
	if again != want {
		t.Errorf("cached image = %+v, want %+v", again, want)
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
	// Another URL with the same file name is another source.
	_, err = ensure(t, c2, srv.URL+"/other/path/noble.img", "")
	wantCode(t, err, CodeUnreachable)

	list, err := c2.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0] != want {
		t.Errorf("List = %+v, want [%+v]", list, want)
	}
}

// TestNormalisedBaseKeepsContent: the base is a standalone qcow2 holding
// exactly the guest data of what was served, raw or qcow2.
func TestNormalisedBaseKeepsContent(t *testing.T) {
	needQemuImg(t)
	raw := rawDisk(t, 1<<20)
	rawFile := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(rawFile, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qcowFile := filepath.Join(t.TempDir(), "src.qcow2")
	if out, err := exec.Command(qemuImgBinary, "convert", "-c", "-f", "raw", "-O", "qcow2", rawFile, qcowFile).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	compressed, err := os.ReadFile(qcowFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, format string
		body         []byte
	}{{"raw", "raw", raw}, {"compressed qcow2", "qcow2", compressed}} {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := serve(t, serveBytes(tt.body))
			c := newCache(t, Options{})
			img, err := ensure(t, c, srv.URL+"/disk.img", digestOf(tt.body))
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if img.Format != "qcow2" || img.VirtualSize != int64(len(raw)) {
				t.Errorf("image = %+v", img)
			}
			if out, err := exec.Command(qemuImgBinary, "compare", "-q", "-f", "raw", "-F", "qcow2", rawFile, img.Path).CombinedOutput(); err != nil {
				t.Errorf("base differs from the source: %v %s", err, out)
			}
			info := qemuInfo(t, img.Path)
			if info.Format != "qcow2" || info.BackingFilename != "" || info.FormatSpecific.Data.DataFile != "" {
				t.Errorf("base info = %+v, want a standalone qcow2", info)
			}
		})
	}
}

// TestLegacyLayoutIgnored: until MigrateLegacy moves it, an image the old
// basename-keyed layout left at the top of the cache is neither served,
// listed nor removed (existing VM disks may still be backed by it).
func TestLegacyLayoutIgnored(t *testing.T) {
	needQemuImg(t)
	dir := filepath.Join(t.TempDir(), "pool")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := qcow2Image(t, "16M")
	for name, b := range map[string][]byte{"debian.qcow2": old, ".debian.qcow2.sha256": []byte(digestOf(old) + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New("default", dir, Options{Allow: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Nothing listens here: the old file must not stand in for a download.
	_, err = ensure(t, c, "http://127.0.0.1:1/debian.qcow2", digestOf(old))
	wantCode(t, err, CodeUnreachable)
	if list, err := c.List(); err != nil || len(list) != 0 {
		t.Errorf("List = %+v, %v; want nothing", list, err)
	}
	if got := strings.Join(c.LegacyFiles(), ","); got != "debian.qcow2" {
		t.Errorf("LegacyFiles = %s", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "debian.qcow2")); err != nil || string(b) != string(old) {
		t.Errorf("legacy image was touched: %v", err)
	}
}

func TestEnsureChecksumMismatch(t *testing.T) {
	needQemuImg(t)
	body := rawDisk(t, 64<<10)
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})

	_, err := ensure(t, c, srv.URL+"/disk.raw", strings.Repeat("ab", 32))
	wantCode(t, err, CodeChecksumMismatch)
	assertNothingCached(t, c)
}

func TestEnsureHTTPFailures(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String() + "/x.img"
	closed.Close()

	tests := []struct {
		name    string
		status  int
		url     string
		code    string
		message string
	}{
		{"not found", http.StatusNotFound, "", CodeNotFound, "download failed: HTTP 404"},
		{"server error", http.StatusInternalServerError, "", CodeDownloadFailed, "download failed: HTTP 500"},
		{"forbidden", http.StatusForbidden, "", CodeDownloadFailed, "download failed: HTTP 403"},
		{"unreachable", 0, deadURL, CodeUnreachable, "download failed: connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "SECRET-BODY", tt.status)
			})
			url := tt.url
			if url == "" {
				url = srv.URL + "/x.img"
			}
			c := newCache(t, Options{})
			_, err := ensure(t, c, url, "")
			wantCode(t, err, tt.code)
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("err = %v, want it to mention %q", err, tt.message)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("err = %v echoes the response body", err)
			}
			assertNothingCached(t, c)
		})
	}
}

func TestEnsureInvalidFormat(t *testing.T) {
	needQemuImg(t)
	tests := []struct {
		name string
		body []byte
	}{
		{"html", []byte("<!doctype html><html><body>SECRET mirror maintenance</body></html>")},
		{"gzip", append([]byte{0x1f, 0x8b, 0x08, 0}, make([]byte, 4096)...)},
		{"zeros", make([]byte, 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := serve(t, serveBytes(tt.body))
			c := newCache(t, Options{})
			_, err := ensure(t, c, srv.URL+"/disk.qcow2", "")
			wantCode(t, err, CodeInvalidFormat)
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "doctype") {
				t.Errorf("err = %v echoes the response body", err)
			}
			assertNothingCached(t, c)
		})
	}
}

func TestEnsureTooLarge(t *testing.T) {
	body := rawDisk(t, 64<<10)
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})
	c.freeSpace = func(string) (int64, error) { return int64(len(body)) - 1, nil }

	_, err := ensure(t, c, srv.URL+"/disk.raw", "")
	wantCode(t, err, CodeInsufficientStorage)
	assertNothingCached(t, c)
}

func TestEnsureInvalidArguments(t *testing.T) {
	c := newCache(t, Options{})
	_, err := ensure(t, c, "ftp://example.com/a.img", "")
	wantCode(t, err, CodeURLInvalid)
	for _, sha := range []string{"abc", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		_, err := ensure(t, c, "http://127.0.0.1:1/a.img", sha)
		wantCode(t, err, CodeSHA256Invalid)
	}
	assertNothingCached(t, c)
}

// TestEnsureStallThenResume serves the first half of body and then goes quiet; the
// next request must be a conditional range request for the rest.
func TestEnsureStallThenResume(t *testing.T) {
	needQemuImg(t)
	body := rawDisk(t, 512<<10)
	half := len(body) / 2
	var (
		mu       sync.Mutex
		requests int
		rangeHdr string
		ifRange  string
	)
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		n := requests
		if n == 2 {
			rangeHdr, ifRange = r.Header.Get("Range"), r.Header.Get("If-Range")
		}
		mu.Unlock()
		w.Header().Set("ETag", `"v1"`)
		if n == 1 {
			w.Header().Set("Content-Length", itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			w.Write(body[:half])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // silent until the client gives up
			return
		}
		if r.Header.Get("Range") != "bytes="+itoa(half)+"-" || r.Header.Get("If-Range") != `"v1"` {
			http.Error(w, "expected a resume", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Range", "bytes "+itoa(half)+"-"+itoa(len(body)-1)+"/"+itoa(len(body)))
		w.Header().Set("Content-Length", itoa(len(body)-half))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body[half:])
	})
	c := newCache(t, Options{StallTimeout: 300 * time.Millisecond})
	url := srv.URL + "/disk.raw"

	_, err := ensure(t, c, url, digestOf(body))
	wantCode(t, err, CodeDownloadStalled)
	st, err := os.Stat(c.partialPath(url))
	if err != nil {
		t.Fatalf("partial not kept: %v", err)
	}
	if st.Size() != int64(half) {
		t.Errorf("partial has %d bytes, want %d", st.Size(), half)
	}

	var first int64 = -1
	img, err := c.Ensure(context.Background(), url, digestOf(body), func(done, total int64) {
		if first < 0 {
			first = done
		}
	})
	if err != nil {
		t.Fatalf("resumed Ensure: %v", err)
	}
	if img.SHA256 != digestOf(body) {
		t.Errorf("digest = %s, want %s", img.SHA256, digestOf(body))
	}
	if first != int64(half) {
		t.Errorf("first progress = %d, want the resume offset %d", first, half)
	}
	mu.Lock()
	defer mu.Unlock()
	if requests != 2 || rangeHdr != "bytes="+itoa(half)+"-" || ifRange != `"v1"` {
		t.Errorf("requests = %d, Range = %q, If-Range = %q", requests, rangeHdr, ifRange)
	}
	if names := dirNames(t, filepath.Join(c.dir, dirPartial)); len(names) != 0 {
		t.Errorf("partial files left: %v", names)
	}
}

func TestEnsureRestartsWhenRangeIgnored(t *testing.T) {
	needQemuImg(t)
	body := rawDisk(t, 128<<10)
	var sawRange string
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sawRange = r.Header.Get("Range")
		w.Write(body) // 200 with everything, Range or not
	})
	c := newCache(t, Options{})
	url := srv.URL + "/disk.raw"
	// A stale partial from an earlier attempt, with bytes that do not match.
	if err := os.WriteFile(c.partialPath(url), []byte(strings.Repeat("x", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.metaPath(url), []byte(`{"url":"`+url+`","validator":"\"v0\""}`), 0o644); err != nil {
		t.Fatal(err)
	}

	img, err := ensure(t, c, url, digestOf(body))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if sawRange != "bytes=1000-" {
		t.Errorf("Range = %q, want a resume attempt from 1000", sawRange)
	}
	if img.VirtualSize != int64(len(body)) || img.SHA256 != digestOf(body) {
		t.Errorf("image = %+v", img)
	}
}

func TestEnsureConcurrentSharesOneDownload(t *testing.T) {
	needQemuImg(t)
	body := rawDisk(t, 256<<10)
	release := make(chan struct{})
	srv, gets := serve(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		serveBytes(body)(w, r)
	})
	// Cleanups run last-in first-out: free the handlers before the server
	// waits for them, so a failing test ends instead of hanging.
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	c := newCache(t, Options{})

	const callers = 10
	var (
		wg       sync.WaitGroup
		images   [callers]Image
		errs     [callers]error
		progress [callers]int64
	)
	for i := range callers {
		wg.Go(func() {
			images[i], errs[i] = c.Ensure(context.Background(), srv.URL+"/disk.raw", "", func(done, total int64) {
				progress[i] = done
			})
		})
	}
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "all callers to join one download", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.flights[srv.URL+"/disk.raw"]
		return f != nil && f.waiters == callers
	})
	unblock()
	wg.Wait()

	if n := gets.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
	for i := range callers {
		if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
			continue
		}
		if images[i] != images[0] {
			t.Errorf("caller %d got %+v, caller 0 got %+v", i, images[i], images[0])
		}
		if progress[i] != int64(len(body)) {
			t.Errorf("caller %d last progress %d, want %d", i, progress[i], len(body))
		}
	}
}

func TestEnsureCancelledWaiters(t *testing.T) {
	needQemuImg(t)
	body := rawDisk(t, 64<<10)
	release := make(chan struct{})
	aborted := make(chan struct{}, 4)
	srv, gets := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			serveBytes(body)(w, r)
		case <-r.Context().Done():
			aborted <- struct{}{}
		}
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	c := newCache(t, Options{})
	url := srv.URL + "/disk.raw"
	waiters := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		if f := c.flights[url]; f != nil {
			return f.waiters
		}
		return 0
	}

	// One of two callers gives up: the other still gets the image.
	quitCtx, quit := context.WithCancel(context.Background())
	quitErr := make(chan error, 1)
	go func() {
		_, err := c.Ensure(quitCtx, url, "", nil)
		quitErr <- err
	}()
	stayErr := make(chan error, 1)
	go func() {
		_, err := ensure(t, c, url, digestOf(body))
		stayErr <- err
	}()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "two waiters", func() bool { return waiters() == 2 })
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the request to arrive", func() bool { return gets.Load() == 1 })
	quit()
	if err := <-quitErr; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("cancelled caller err = %v, want context canceled", err)
	}
	unblock()
	if err := <-stayErr; err != nil {
		t.Errorf("remaining caller: %v", err)
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}

	// When every caller gives up, the download is cancelled.
	arrived := make(chan struct{}, 1)
	srv2, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
		aborted <- struct{}{}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Ensure(ctx, srv2.URL+"/other.raw", "", nil)
		done <- err
	}()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the waiter to join", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flights[srv2.URL+"/other.raw"] != nil
	})
	// Cancel only once the request is in flight: a cancel before it is sent
	// aborts nothing the server could see.
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the download request never arrived")
	}
	cancel()
	<-done
	select {
	case <-aborted:
	case <-time.After(10 * time.Second):
		t.Fatal("download was not cancelled after its last waiter left")
	}
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the flight to end", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flights[srv2.URL+"/other.raw"] == nil
	})
}

func TestListSkipsPartialsAndJunk(t *testing.T) {
	needQemuImg(t)
	disk := rawDisk(t, 64<<10)
	srv, _ := serve(t, serveBytes(disk))
	c := newCache(t, Options{})
	img, err := ensure(t, c, srv.URL+"/good.raw", "")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		filepath.Join(dirPartial, urlKey("http://x/next.img")): disk[:100],
		filepath.Join(dirBases, "notes.txt"):                   []byte("hello"),
		filepath.Join(dirSources, "junk.json"):                 []byte("{"),
		"stray.qcow2":                                          disk,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list, err := c.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0] != img {
		t.Errorf("List = %+v, want [%+v]", list, img)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
