package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dropped")
	log.Warn("kept", "node", "n1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "kept" || line["node"] != "n1" {
		t.Fatalf("json log %q: %v", buf.String(), err)
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"text", "loud"}} {
		if _, err := newLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("newLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

// TestDebugSocketDefaultAndOff: by default the socket is under the run
// directory and answers; "off" opens none; the returned function closes it
// even while the agent's context lives on (serve returning on an error).
func TestDebugSocketDefaultAndOff(t *testing.T) {
	runDir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	path := filepath.Join(runDir, "debug", "agent.sock")
	stop := startDebugSocket(t.Context(), log, "", runDir)
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "the debug socket answers", func() bool {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	stop()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket still there after stop: %v", err)
	}

	other := t.TempDir()
	startDebugSocket(context.Background(), log, debugSocketOff, other)()
	entries, _ := os.ReadDir(other)
	if len(entries) != 0 || strings.Contains(path, other) {
		t.Fatalf("--debug-socket off created %v", entries)
	}
}
