package storagepool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/otherix/otherix/internal/atomicfile"
)

// MarkerFile is the ownership marker in a pool's directory. It names the
// cluster (its CA fingerprint) and the pool (id and name), so an agent
// never adopts a directory another cluster or pool uses: pointing two pools
// at one path, or a new cluster at an old cluster's storage, is refused
// instead of mixing their volumes.
const MarkerFile = ".otherix-pool.json"

// Marker is the marker's content.
type Marker struct {
	Cluster string `json:"cluster"`
	PoolID  string `json:"pool_id"`
	Pool    string `json:"pool"`
}

// readMarker reads dir's marker; ok is false when there is none.
func readMarker(dir string) (Marker, bool, error) {
	var m Marker
	b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("read pool marker: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, fmt.Errorf("pool marker %s is not valid: %w", filepath.Join(dir, MarkerFile), err)
	}
	return m, true, nil
}

func writeMarker(dir string, m Marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, MarkerFile), append(b, '\n'), 0o600)
}

// empty reports whether dir holds nothing but marker leftovers (a
// temporary file of an interrupted marker write).
func empty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(64)
		for _, n := range names {
			if n != MarkerFile && !isMarkerTemp(n) {
				return false, nil
			}
		}
		if err != nil {
			return true, nil // io.EOF: read everything
		}
	}
}

func isMarkerTemp(name string) bool {
	ok, _ := filepath.Match("."+MarkerFile+".tmp-*", name)
	return ok
}
