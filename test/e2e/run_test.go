//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// runBinary runs one of the built binaries and returns its combined output.
func runBinary(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir(t), name), args...).CombinedOutput()
	return string(out), err
}
