// Package dirformat versions the format of a daemon's local state
// directory, as the control plane's store is versioned (persistence/schema):
// one number in <dir>/FORMAT. A binary migrates an older directory up to its
// own version, step by step, and refuses a newer one without touching it,
// so a downgraded agent cannot misread the VMs a newer one left behind.
package dirformat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/otherix/otherix/internal/atomicfile"
)

// File is the name of the version file inside the directory.
const File = "FORMAT"

// Stamp is what File holds.
type Stamp struct {
	Version   int       `json:"version"`
	WrittenBy string    `json:"written_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Migration moves a directory from version To-1 to To; Run must be
// idempotent (a crash may leave it half done, to be run again) and accept
// an empty directory; nil when no file changes.
type Migration struct {
	To   int
	Name string
	Run  func(dir string) error
}

// TooNewError refuses a directory a newer binary wrote.
type TooNewError struct {
	Dir               string
	Stored, Supported int
	WrittenBy         string
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("%s holds local state of format %d (written by %s); this binary reads format %d at most: "+
		"run the newer version again; nothing was changed", e.Dir, e.Stored, e.WrittenBy, e.Supported)
}

// Read returns the directory's stamp; a directory without one is version 0.
func Read(dir string) (Stamp, error) {
	raw, err := os.ReadFile(filepath.Join(dir, File))
	if errors.Is(err, fs.ErrNotExist) {
		return Stamp{}, nil
	}
	if err != nil {
		return Stamp{}, err
	}
	var s Stamp
	if err := json.Unmarshal(raw, &s); err != nil {
		return Stamp{}, fmt.Errorf("%s: %w", filepath.Join(dir, File), err)
	}
	return s, nil
}

// Ensure brings dir to version current: an older directory (or a new,
// empty one) is migrated, stamping each step, a newer one refused with a
// *TooNewError and left as it is.
func Ensure(dir string, current int, migs []Migration, writer string) error {
	s, err := Read(dir)
	if err != nil {
		return err
	}
	switch {
	case s.Version > current:
		return &TooNewError{Dir: dir, Stored: s.Version, Supported: current, WrittenBy: s.WrittenBy}
	case s.Version == current:
		return nil
	}
	for _, m := range migs {
		if m.To <= s.Version || m.To > current {
			continue
		}
		if m.Run != nil {
			if err := m.Run(dir); err != nil {
				return fmt.Errorf("%s: migration to format %d (%s): %w", dir, m.To, m.Name, err)
			}
		}
		if err := write(dir, m.To, writer); err != nil {
			return err
		}
	}
	return nil
}

func write(dir string, version int, writer string) error {
	b, err := json.Marshal(Stamp{Version: version, WrittenBy: writer, UpdatedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, File), append(b, '\n'), 0o644)
}

// IsTooNew reports whether err refuses a newer directory.
func IsTooNew(err error) bool {
	var e *TooNewError
	return errors.As(err, &e)
}
