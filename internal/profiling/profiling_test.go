package profiling

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

func TestServeUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "debug")
	path := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUnix(ctx, path, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "the debug socket appears", func() bool { _, err := os.Stat(path); return err == nil })

	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", p, got, want)
		}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	get := func(p string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://agent" + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The text dump names this very test's goroutine.
	if code, body := get("/debug/pprof/goroutine?debug=2"); code != 200 || !strings.Contains(body, "profiling.TestServeUnix") {
		t.Fatalf("goroutine dump: %d %.200q", code, body)
	}
	if code, body := get("/debug/pprof/heap"); code != 200 || len(body) == 0 {
		t.Fatalf("heap profile: %d, %d bytes", code, len(body))
	}
	if code, body := get("/debug/pprof/nonsense"); code != 404 || !strings.Contains(body, "goroutine") {
		t.Fatalf("unknown profile: %d %q", code, body)
	}
	for _, q := range []string{"0", "121", "x"} {
		if code, _ := get("/debug/pprof/profile?seconds=" + q); code != 400 {
			t.Fatalf("cpu profile of %s seconds answered %d", q, code)
		}
	}
	if code, body := get("/debug/pprof/profile?seconds=1"); code != 200 || len(body) == 0 {
		t.Fatalf("cpu profile: %d, %d bytes", code, len(body))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the cleanup
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after shutdown: %v", err)
	}
}

// TestServeUnixRefusesNonSocket: a regular file where the socket goes is
// the operator's, not a stale socket, and is left alone.
func TestServeUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := ServeUnix(t.Context(), path, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("ServeUnix over a file = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Fatal("the file was touched")
	}
}
