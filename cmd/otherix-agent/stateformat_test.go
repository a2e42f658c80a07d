package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/internal/dirformat"
	"github.com/otherix/otherix/nodeagent/enroll"
)

// TestStateFormat: bootstrap stamps the state directory with this agent's
// format; a directory a newer agent stamped is refused by bootstrap (before
// it re-enrolls anything) and by serve (before any VM record is read),
// naming the newer writer, and the stamp is left as it was.
func TestStateFormat(t *testing.T) {
	_, srv, token := enrollServerAndToken(t)
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := run("bootstrap", "--server", srv.URL, "--token", token, "--name", "hv1", "--state-dir", dir); err != nil {
		t.Fatal(err)
	}
	if s, err := dirformat.Read(dir); err != nil || s.Version != stateFormat || !strings.HasPrefix(s.WrittenBy, "otherix-agent ") {
		t.Fatalf("stamp after bootstrap: %+v, %v", s, err)
	}

	newer, _ := json.Marshal(dirformat.Stamp{Version: stateFormat + 1, WrittenBy: "otherix-agent 9.9.0"})
	if err := os.WriteFile(filepath.Join(dir, dirformat.File), newer, 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, enroll.ConfigFile))
	_, err := run("bootstrap", "--server", srv.URL, "--token", token, "--name", "hv2", "--force", "--state-dir", dir)
	if !dirformat.IsTooNew(err) || !strings.Contains(err.Error(), "otherix-agent 9.9.0") {
		t.Fatalf("bootstrap into a newer state dir: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, enroll.ConfigFile)); string(after) != string(before) {
		t.Fatal("the refused bootstrap rewrote the identity")
	}
	_, err = run("serve", "--state-dir", dir, "--run-dir", t.TempDir())
	if !dirformat.IsTooNew(err) {
		t.Fatalf("serve on a newer state dir: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, dirformat.File)); string(got) != string(newer) {
		t.Fatal("the refusal rewrote the stamp")
	}
}
