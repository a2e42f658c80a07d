// Package profiling serves a daemon's runtime profiles and goroutine dump
// (net/http/pprof) to whoever the daemon already trusts with everything:
// the control plane mounts it behind the admin role, the agent on a unix
// socket only root can open. Neither opens a port for it.
package profiling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	rtpprof "runtime/pprof"
	"strconv"
	"time"
)

// MaxSeconds bounds a CPU profile or an execution trace: long enough to
// catch a slow loop, short enough that a forgotten request ends.
const MaxSeconds = 120

// Names lists what Serve answers: the runtime's named profiles, and
// "profile" (CPU) and "trace" (execution trace), which take ?seconds=N.
func Names() []string {
	names := []string{"profile", "trace"}
	for _, p := range rtpprof.Profiles() {
		names = append(names, p.Name())
	}
	return names
}

// ErrUnknown and ErrSeconds are what Check refuses.
var (
	ErrUnknown = errors.New("unknown profile")
	ErrSeconds = fmt.Errorf("seconds must be an integer from 1 to %d", MaxSeconds)
)

// Check validates a request for profile name before anything is written,
// so the caller can answer its own error envelope.
func Check(name string, r *http.Request) error {
	switch name {
	case "profile", "trace":
		if s := r.URL.Query().Get("seconds"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > MaxSeconds {
				return ErrSeconds
			}
		}
		return nil
	}
	if rtpprof.Lookup(name) == nil {
		return ErrUnknown
	}
	return nil
}

// Serve writes profile name in pprof's format (or, for goroutine with
// ?debug=2, the text dump a SIGQUIT would print, without killing the
// process). Call Check first.
func Serve(w http.ResponseWriter, r *http.Request, name string) {
	switch name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
}

// Handler serves GET /debug/pprof/NAME with Check's refusals as plain
// text, for the agent's socket.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := Check(name, r); err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, ErrUnknown) {
				status = http.StatusNotFound
			}
			http.Error(w, fmt.Sprintf("%s: %v (profiles: %v)", name, err, Names()), status)
			return
		}
		Serve(w, r, name)
	})
	return mux
}

// ServeUnix serves Handler on a unix socket at path until ctx ends. The
// socket's directory is made 0700, so only the daemon's user can reach the
// socket whatever the umask gave it (changing the umask would race with
// every file the daemon creates meanwhile); the socket itself is 0600. A
// stale socket from a previous run is replaced; anything else at path is
// refused rather than removed.
func ServeUnix(ctx context.Context, path string, log *slog.Logger) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("debug socket: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("debug socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("debug socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("debug socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("debug socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("debug socket: %w", err)
	}
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("profiles and goroutine dump on a local socket", "socket", path)
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		<-done
		_ = os.Remove(path)
		return nil
	case err := <-done:
		return fmt.Errorf("debug socket: %w", err)
	}
}
