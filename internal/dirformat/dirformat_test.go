package dirformat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	var ran []int
	step := func(n int) func(string) error {
		return func(d string) error {
			ran = append(ran, n)
			return os.WriteFile(filepath.Join(d, "step"), []byte{byte('0' + n)}, 0o644)
		}
	}
	migs := []Migration{{To: 1}, {To: 2, Run: step(2)}, {To: 3, Run: step(3)}}

	// A directory without a stamp is format 0: migrated up to current only.
	if err := Ensure(dir, 2, migs, "agent v2"); err != nil {
		t.Fatal(err)
	}
	if s, _ := Read(dir); s.Version != 2 || s.WrittenBy != "agent v2" || len(ran) != 1 || ran[0] != 2 {
		t.Fatalf("stamp %+v, migrations %v", s, ran)
	}
	// At its version: nothing runs.
	if err := Ensure(dir, 2, migs, "agent v2"); err != nil || len(ran) != 1 {
		t.Fatalf("second start: %v, migrations %v", err, ran)
	}
	// Upgraded: the next step runs.
	if err := Ensure(dir, 3, migs, "agent v3"); err != nil || len(ran) != 2 || ran[1] != 3 {
		t.Fatalf("upgrade: %v, migrations %v", err, ran)
	}
	// Downgraded: refused, naming the writer, and nothing touched.
	before, _ := os.ReadFile(filepath.Join(dir, File))
	err := Ensure(dir, 2, migs, "agent v2")
	if !IsTooNew(err) || !strings.Contains(err.Error(), "agent v3") {
		t.Fatalf("downgrade: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, File))
	if string(before) != string(after) {
		t.Fatal("the refusal rewrote the stamp")
	}
	if st, _ := os.Stat(filepath.Join(dir, File)); st.Mode().Perm() != 0o644 {
		t.Fatalf("stamp mode %v", st.Mode())
	}
}

func TestEnsureStopsAtAFailedStep(t *testing.T) {
	dir := t.TempDir()
	migs := []Migration{{To: 1}, {To: 2, Run: func(string) error { return os.ErrPermission }}}
	if err := Ensure(dir, 2, migs, "x"); err == nil || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("failed step: %v", err)
	}
	if s, _ := Read(dir); s.Version != 1 {
		t.Fatalf("after a failed step the stamp says %d, want the last completed 1", s.Version)
	}
}
