package images

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// serveOn serves h on a loopback address of our choosing, so two origins
// can look like two hosts.
func serveOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

const officialName = "debian-12-genericcloud-amd64.qcow2"

// TestHostileURLDoesNotPoisonOfficial: a tenant's URL that ends in the
// official image's file name gets its own image; the official URL still
// gets the official bytes, whether the hostile one came first or runs at
// the same time.
func TestHostileURLDoesNotPoisonOfficial(t *testing.T) {
	needQemuImg(t)
	official, hostile := qcow2Image(t, "32M"), qcow2Image(t, "48M")

	t.Run("sequential", func(t *testing.T) {
		offSrv := serveOn(t, "127.0.0.1:0", serveBytes(official))
		evilSrv := serveOn(t, "127.0.0.2:0", serveBytes(hostile))
		c := newCache(t, Options{})
		evil, err := ensure(t, c, evilSrv.URL+"/"+officialName, "")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // downloaded, then cached
			img, err := ensure(t, c, offSrv.URL+"/cloud/"+officialName, "")
			if err != nil {
				t.Fatal(err)
			}
			if img.SHA256 != digestOf(official) || img.VirtualSize != 32<<20 || img.Path == evil.Path {
				t.Fatalf("official URL got %+v, the hostile image is %+v", img, evil)
			}
		}
		// With the official digest pinned, the official URL still works.
		if _, err := ensure(t, c, offSrv.URL+"/cloud/"+officialName, digestOf(official)); err != nil {
			t.Fatalf("pinned official: %v", err)
		}
		// The heartbeat's list keeps both, told apart by digest.
		list, err := c.List()
		if err != nil || len(list) != 2 || list[0].Name != officialName || list[1].Name != officialName || list[0].SHA256 == list[1].SHA256 {
			t.Errorf("List = %+v, %v", list, err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		release := make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(release) }) }
		slow := func(body []byte) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				<-release
				serveBytes(body)(w, r)
			}
		}
		offSrv := serveOn(t, "127.0.0.1:0", slow(official))
		evilSrv := serveOn(t, "127.0.0.2:0", slow(hostile))
		// Cleanups run last-in first-out: free the handlers before the
		// servers wait for them, so a failing test ends instead of hanging.
		t.Cleanup(unblock)
		c := newCache(t, Options{})
		offURL, evilURL := offSrv.URL+"/"+officialName, evilSrv.URL+"/"+officialName
		var wg sync.WaitGroup
		var offImg, evilImg Image
		var offErr, evilErr error
		wg.Go(func() { evilImg, evilErr = ensure(t, c, evilURL, "") })
		wg.Go(func() { offImg, offErr = ensure(t, c, offURL, digestOf(official)) })
		testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "two separate downloads", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.flights[offURL] != nil && c.flights[evilURL] != nil
		})
		unblock()
		wg.Wait()
		if offErr != nil || evilErr != nil {
			t.Fatalf("official: %v; hostile: %v", offErr, evilErr)
		}
		if offImg.SHA256 != digestOf(official) || evilImg.SHA256 != digestOf(hostile) {
			t.Errorf("official got %s, hostile got %s", offImg.SHA256, evilImg.SHA256)
		}
	})
}

// TestEnsureRefetchesForAnotherDigest: a cached image of a URL with
// another digest than the one asked for is not an answer: the origin is
// asked again (it may have published a new image).
func TestEnsureRefetchesForAnotherDigest(t *testing.T) {
	needQemuImg(t)
	v1, v2 := qcow2Image(t, "16M"), qcow2Image(t, "24M")
	var mu sync.Mutex
	body := v1
	srv, gets := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b := body
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	})
	c := newCache(t, Options{})
	url := srv.URL + "/img.qcow2"
	if _, err := ensure(t, c, url, digestOf(v1)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	body = v2
	mu.Unlock()
	img, err := ensure(t, c, url, digestOf(v2))
	if err != nil || img.SHA256 != digestOf(v2) || gets.Load() != 2 {
		t.Fatalf("Ensure v2 = %+v, %v after %d requests", img, err, gets.Load())
	}
	// Asking for v1 again: the origin serves v2 only.
	_, err = ensure(t, c, url, digestOf(v1))
	wantCode(t, err, CodeChecksumMismatch)
	// Without a digest, the URL's latest record answers.
	if img, err := ensure(t, c, url, ""); err != nil || img.SHA256 != digestOf(v2) {
		t.Errorf("Ensure = %+v, %v; want v2", img, err)
	}
}

// TestPullAlwaysRevalidates: under PullAlways every Ensure asks the origin
// with the validator it saw; 304 keeps the base, a new body replaces it.
func TestPullAlwaysRevalidates(t *testing.T) {
	needQemuImg(t)
	v1, v2 := qcow2Image(t, "16M"), qcow2Image(t, "24M")
	var mu sync.Mutex
	body, etag := v1, `"v1"`
	var conds []string
	srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		conds = append(conds, r.Header.Get("If-None-Match"))
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
	c := newCache(t, Options{PullPolicy: PullAlways})
	url := srv.URL + "/img.qcow2"
	first, err := ensure(t, c, url, "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := ensure(t, c, url, "")
	if err != nil || again != first {
		t.Fatalf("revalidated Ensure = %+v, %v; want %+v", again, err, first)
	}
	mu.Lock()
	body, etag = v2, `"v2"`
	mu.Unlock()
	changed, err := ensure(t, c, url, "")
	if err != nil || changed.SHA256 != digestOf(v2) {
		t.Fatalf("Ensure after a change = %+v, %v", changed, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(conds, ",") != `,"v1","v1"` {
		t.Errorf("If-None-Match sent = %q", conds)
	}
}

// TestEnsureSizeCap: a Content-Length over the cap is refused before the
// body is read; without one the download stops at the cap.
func TestEnsureSizeCap(t *testing.T) {
	needQemuImg(t)
	const limit = 1 << 20
	t.Run("content-length", func(t *testing.T) {
		srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", itoa(64<<20))
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 64<<20))
		})
		c := newCache(t, Options{MaxSize: limit})
		_, err := ensure(t, c, srv.URL+"/big.img", "")
		wantCode(t, err, CodeTooLarge)
		assertNothingCached(t, c)
	})
	t.Run("no content-length", func(t *testing.T) {
		served := make(chan int64, 1)
		srv, _ := serve(t, func(w http.ResponseWriter, r *http.Request) {
			var n int64
			buf := make([]byte, 64<<10)
			for n < 1<<30 { // 1 GiB unless the client hangs up
				m, err := w.Write(buf)
				n += int64(m)
				if err != nil {
					break
				}
				w.(http.Flusher).Flush()
			}
			served <- n
		})
		c := newCache(t, Options{MaxSize: limit})
		_, err := ensure(t, c, srv.URL+"/endless.img", "")
		wantCode(t, err, CodeTooLarge)
		if n := <-served; n >= 1<<30 {
			t.Errorf("the server wrote %d bytes: the download did not stop at the cap", n)
		}
		assertNothingCached(t, c)
	})
	t.Run("virtual size", func(t *testing.T) {
		body := qcow2Image(t, "2M")
		srv, _ := serve(t, serveBytes(body))
		c := newCache(t, Options{MaxSize: limit})
		_, err := ensure(t, c, srv.URL+"/wide.qcow2", "")
		wantCode(t, err, CodeTooLarge)
		assertNothingCached(t, c)
	})
}
