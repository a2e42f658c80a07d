package images

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEnsureDownloadsAndCaches(t *testing.T) {
	needQemuImg(t)
	body := qcow2Image(t, "64M")
	srv, gets := serve(t, serveBytes(body))
	c := newCache(t, Options{})

	var last [2]int64
	img, err := c.Ensure(context.Background(), srv.URL+"/os/noble.img", digestOf(body), func(done, total int64) {
		last = [2]int64{done, total}
	})
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	want := Image{
		Pool: "default", Name: "noble.img", Path: filepath.Join(c.dir, "noble.img"), Format: "qcow2",
		SizeBytes: int64(len(body)), VirtualSize: 64 << 20, SHA256: digestOf(body),
	}
	if img != want {
		t.Errorf("image = %+v\nwant    %+v", img, want)
	}
	if last != [2]int64{int64(len(body)), int64(len(body))} {
		t.Errorf("last progress = %v, want done = total = %d", last, len(body))
	}
	if got, _ := os.ReadFile(img.Path); string(got) != string(body) {
		t.Error("cached file differs from the served body")
	}
	names := dirNames(t, c.dir)
	if strings.Join(names, ",") != ".noble.img.sha256,noble.img" {
		t.Errorf("pool holds %v, want the image and its digest sidecar only", names)
	}

	// A second cache on the same directory, as after an agent restart, must
	// not go to the network, even with the server gone.
	srv.Close()
	c2, err := New("default", c.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	again, err := ensure(t, c2, srv.URL+"/other/path/noble.img", digestOf(body))
	if err != nil {
		t.Fatalf("cached Ensure: %v", err)
	}
	if again != want {
		t.Errorf("cached image = %+v, want %+v", again, want)
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}

	list, err := c2.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0] != want {
		t.Errorf("List = %+v, want [%+v]", list, want)
	}
}

func TestEnsureCachedWithoutSidecar(t *testing.T) {
	needQemuImg(t)
	c := newCache(t, Options{})
	body := rawDisk(t, 64<<10)
	if err := os.WriteFile(filepath.Join(c.dir, "disk.raw"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	// Nothing listens here: the cached path must not dial.
	url := "http://127.0.0.1:1/disk.raw"

	img, err := ensure(t, c, url, strings.ToUpper(digestOf(body)))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if img.Format != "raw" || img.VirtualSize != int64(len(body)) || img.SHA256 != digestOf(body) {
		t.Errorf("image = %+v", img)
	}
	side, err := os.ReadFile(c.shaPath("disk.raw"))
	if err != nil || strings.TrimSpace(string(side)) != digestOf(body) {
		t.Errorf("sidecar = %q, %v; want the digest", side, err)
	}

	_, err = ensure(t, c, url, strings.Repeat("0", 64))
	wantCode(t, err, CodeChecksumMismatch)
	if !strings.Contains(err.Error(), "cached image") {
		t.Errorf("err = %v, want it to say the cached image differs", err)
	}
}

func TestEnsureChecksumMismatch(t *testing.T) {
	needQemuImg(t)
	body := rawDisk(t, 64<<10)
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})

	_, err := ensure(t, c, srv.URL+"/disk.raw", strings.Repeat("ab", 32))
	wantCode(t, err, CodeChecksumMismatch)
	assertEmptyDir(t, c.dir)
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
		{"not found", http.StatusNotFound, "", CodeNotFound, "404"},
		{"server error", http.StatusInternalServerError, "", CodeDownloadFailed, "HTTP 500"},
		{"forbidden", http.StatusForbidden, "", CodeDownloadFailed, "HTTP 403"},
		{"unreachable", 0, deadURL, CodeUnreachable, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "nope", tt.status)
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
			assertEmptyDir(t, c.dir)
		})
	}
}

func TestEnsureInvalidFormat(t *testing.T) {
	needQemuImg(t)
	tests := []struct {
		name string
		body []byte
	}{
		{"html", []byte("<!doctype html><html><body>mirror maintenance</body></html>")},
		{"gzip", append([]byte{0x1f, 0x8b, 0x08, 0}, make([]byte, 4096)...)},
		{"zeros", make([]byte, 4096)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := serve(t, serveBytes(tt.body))
			c := newCache(t, Options{})
			_, err := ensure(t, c, srv.URL+"/disk.qcow2", "")
			wantCode(t, err, CodeInvalidFormat)
			assertEmptyDir(t, c.dir)
		})
	}
}

func TestEnsureRejectsBackingFile(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	base0 := qcow2Image(t, "16M")
	if err := os.WriteFile(base, base0, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CreateOverlay(context.Background(), Image{Name: "base", Path: base, Format: "qcow2", VirtualSize: 16 << 20}, top, 16<<20); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(top)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})
	_, err = ensure(t, c, srv.URL+"/top.qcow2", "")
	wantCode(t, err, CodeInvalidFormat)
	if !strings.Contains(err.Error(), "backing file") {
		t.Errorf("err = %v, want it to mention the backing file", err)
	}
	assertEmptyDir(t, c.dir)
}

func TestEnsureTooLarge(t *testing.T) {
	body := rawDisk(t, 64<<10)
	srv, _ := serve(t, serveBytes(body))
	c := newCache(t, Options{})
	c.freeSpace = func(string) (int64, error) { return int64(len(body)) - 1, nil }

	_, err := ensure(t, c, srv.URL+"/disk.raw", "")
	wantCode(t, err, CodeTooLarge)
	assertEmptyDir(t, c.dir)
}

func TestEnsureInvalidArguments(t *testing.T) {
	c := newCache(t, Options{})
	_, err := ensure(t, c, "ftp://example.com/a.img", "")
	wantCode(t, err, CodeURLInvalid)
	for _, sha := range []string{"abc", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		_, err := ensure(t, c, "http://127.0.0.1:1/a.img", sha)
		wantCode(t, err, CodeSHA256Invalid)
	}
	assertEmptyDir(t, c.dir)
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
	st, err := os.Stat(c.partialPath("disk.raw"))
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
	if got, _ := os.ReadFile(img.Path); string(got) != string(body) {
		t.Error("resumed file differs from the served body")
	}
	if first != int64(half) {
		t.Errorf("first progress = %d, want the resume offset %d", first, half)
	}
	mu.Lock()
	defer mu.Unlock()
	if requests != 2 || rangeHdr != "bytes="+itoa(half)+"-" || ifRange != `"v1"` {
		t.Errorf("requests = %d, Range = %q, If-Range = %q", requests, rangeHdr, ifRange)
	}
	if hasPrefixAny(dirNames(t, c.dir), ".disk.raw.partial") {
		t.Errorf("partial files left: %v", dirNames(t, c.dir))
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
	if err := os.WriteFile(c.partialPath("disk.raw"), []byte(strings.Repeat("x", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.metaPath("disk.raw"), []byte(`{"url":"`+url+`","validator":"\"v0\""}`), 0o644); err != nil {
		t.Fatal(err)
	}

	img, err := ensure(t, c, url, digestOf(body))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if sawRange != "bytes=1000-" {
		t.Errorf("Range = %q, want a resume attempt from 1000", sawRange)
	}
	if img.SizeBytes != int64(len(body)) || img.SHA256 != digestOf(body) {
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
	eventually(t, "all callers to join one download", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.flights["disk.raw"]
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
		if f := c.flights["disk.raw"]; f != nil {
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
	eventually(t, "two waiters", func() bool { return waiters() == 2 })
	eventually(t, "the request to arrive", func() bool { return gets.Load() == 1 })
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
	eventually(t, "the waiter to join", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flights["other.raw"] != nil
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
	eventually(t, "the flight to end", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.flights["other.raw"] == nil
	})
}

func TestListSkipsPartialsAndJunk(t *testing.T) {
	needQemuImg(t)
	c := newCache(t, Options{})
	disk := rawDisk(t, 4096)
	files := map[string][]byte{
		"good.raw":         disk,
		".good.raw.sha256": []byte(digestOf(disk) + "\n"),
		".next.partial":    disk[:100],
		"notes.txt":        []byte("hello"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(c.dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := c.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0].Name != "good.raw" || list[0].SHA256 != digestOf(disk) || list[0].SizeBytes != 4096 {
		t.Errorf("List = %+v, want good.raw only", list)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
