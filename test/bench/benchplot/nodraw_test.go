//go:build !plot

package benchplot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteWithoutTag: without -tags plot, Write names the tag and writes
// nothing.
func TestWriteWithoutTag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.svg")
	if err := Write(path, Chart{}); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("err = %v, want ErrNotBuilt", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was written: %v", err)
	}
}
