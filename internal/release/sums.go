package release

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// WriteSums writes dir/name in the format of sha256sum(1), one line per file
// of names (relative to dir), so `sha256sum -c SHA256SUMS` checks them.
func WriteSums(dir, name string, names []string) error {
	names = slices.Sorted(slices.Values(names))
	var b strings.Builder
	for _, n := range names {
		sum, err := fileSHA256(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("release: sums: %w", err)
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, n)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("release: sums: %w", err)
	}
	return nil
}

// VerifySums checks every line of dir/name against the files in dir and
// returns the names it checked.
func VerifySums(dir, name string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("release: verify sums: %w", err)
	}
	defer f.Close()
	var checked []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		want, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(want) != 64 || file == "" || strings.Contains(file, "/") {
			return checked, fmt.Errorf("release: verify sums: malformed line %q", sc.Text())
		}
		got, err := fileSHA256(filepath.Join(dir, file))
		if err != nil {
			return checked, fmt.Errorf("release: verify sums: %w", err)
		}
		if got != want {
			return checked, fmt.Errorf("release: verify sums: %s: sha256 %s, SHA256SUMS says %s", file, got, want)
		}
		checked = append(checked, file)
	}
	return checked, sc.Err()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
