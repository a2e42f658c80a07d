package volumes

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Journal operations.
const (
	opDelete         = "delete"          // delete Volume and its snapshots
	opResize         = "resize"          // grow Volume to Size
	opRef            = "ref"             // File is being made and reads Ref
	opDeleteSnapshot = "delete-snapshot" // delete Volume's Snapshot (dir: kept if refs appear)
)

// intent is one journal record: what a multi-step change is about to do,
// written durably before its first step and removed after its last, so
// Recover can finish or undo it after a crash.
type intent struct {
	Op       string `json:"op"`
	Volume   string `json:"volume,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
	Size     int64  `json:"size,omitempty"`
	// File is the path a ref is made for; Ref is refs/VOL/SNAP/ID.
	File string `json:"file,omitempty"`
	Ref  string `json:"ref,omitempty"`
}

func (in intent) String() string {
	s := in.Op + " " + in.Volume
	if in.Snapshot != "" {
		s += "@" + in.Snapshot
	}
	if in.File != "" {
		s += " " + filepath.Base(in.File)
	}
	return s
}

// journalKey names a record: one per volume (or volume@snapshot) at a
// time, which the per-volume lock guarantees.
func journalKey(volume, snapshot string) string {
	if snapshot == "" {
		return volume
	}
	return volume + "@" + snapshot
}

func (p *pool) journalPath(key string) string {
	return p.path(dirJournal, p.node, key+".json")
}

// record writes an intent durably.
func (p *pool) record(key string, in intent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	if err := p.writeAtomic(p.journalPath(key), b); err != nil {
		return p.ioError("write journal", err)
	}
	return nil
}

// forget removes an intent once its change is complete.
func (p *pool) forget(key string) error {
	if err := os.Remove(p.journalPath(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return newError(CodeIO, "remove journal", err)
	}
	return fsyncDir(p.path(dirJournal, p.node))
}

// pending returns this node's journal, sorted by key.
func (p *pool) pending() (map[string]intent, []string, error) {
	dir := p.path(dirJournal, p.node)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, newError(CodeIO, "read journal", err)
	}
	out := map[string]intent{}
	var keys []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			// A record torn while written: its change never started.
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		key, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, nil, newError(CodeIO, "read journal", err)
		}
		var in intent
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, nil, newError(CodeIO, "journal "+e.Name()+" is unreadable", err)
		}
		out[key] = in
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return out, keys, nil
}
