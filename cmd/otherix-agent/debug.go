package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/otherix/otherix/internal/profiling"
)

// debugSocketOff is the --debug-socket value that opens none.
const debugSocketOff = "off"

// startDebugSocket serves the agent's profiles on a unix socket (root only,
// see profiling.ServeUnix) until ctx ends or the returned function, which
// closes it and waits, is called. A socket that cannot be opened is logged, not fatal:
// profiling is for diagnosing an agent, never a reason to stop one.
func startDebugSocket(ctx context.Context, log *slog.Logger, path, runDir string) (wait func()) {
	if path == debugSocketOff {
		return func() {}
	}
	if path == "" {
		path = filepath.Join(runDir, "debug", "agent.sock")
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := profiling.ServeUnix(ctx, path, log); err != nil {
			log.Warn("no debug socket", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// newLogger is the agent's logger: text for a terminal, json for a log
// pipeline, at the given level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: text or json", format)
}
