package main

import (
	"errors"
	"io/fs"
	"os"

	"github.com/otherix/otherix/internal/buildinfo"
	"github.com/otherix/otherix/internal/dirformat"
)

// stateFormat is the format of the agent's state directory (identity, VM
// records, image cache) this binary reads and writes:
//
//	0  written before formats were versioned (no FORMAT file)
//	1  the first versioned format; the same files as 0
const stateFormat = 1

// stateMigrations move a state directory up to stateFormat.
var stateMigrations = []dirformat.Migration{
	{To: 1, Name: "stamp the first versioned format (no file changes)"},
}

// ensureStateFormat migrates the state directory to stateFormat, or
// refuses one a newer agent wrote: a downgraded agent must not misread the
// VM records it would re-adopt.
func ensureStateFormat(dir string) error {
	return dirformat.Ensure(dir, stateFormat, stateMigrations, "otherix-agent "+buildinfo.Version())
}

// refuseNewerState refuses, before anything is written, a state directory
// a newer agent wrote; a directory that does not exist yet is fine.
func refuseNewerState(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s, err := dirformat.Read(dir)
	if err != nil {
		return err
	}
	if s.Version > stateFormat {
		return &dirformat.TooNewError{Dir: dir, Stored: s.Version, Supported: stateFormat, WrittenBy: s.WrittenBy}
	}
	return nil
}
