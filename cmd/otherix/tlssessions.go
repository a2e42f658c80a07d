package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// The TLS session cache lets one CLI invocation resume the TLS session of
// an earlier one instead of a full handshake (a key exchange and a
// certificate chain to verify: about half of what `otherix vm list` costs
// above the bare process). Go's client keeps sessions in memory only, for
// the life of the process; this cache keeps the session tickets the
// server sent in a file next to the config, so the next process finds
// them.
//
// The file is as sensitive as the config it sits beside: a session's
// secret lets whoever holds it resume as this client, and whoever can
// write it could make the client resume with a secret of their choosing.
// So it is written 0600 by rename (a symlink at its path is replaced, never
// followed), read only if it is a regular file of this user's that nobody
// else may read or write, opened without following a symlink, and any
// content that does not parse is ignored (a full handshake then happens,
// as without a cache). Go's client verifies a resumed session's chain
// against the pinned CA again, as for a full handshake
// (TestResumedSessionVerifiedAgainstPin), so a planted session of another
// CA's server is refused.
const (
	sessionCacheFile = "tls-sessions"
	// sessionCacheMaxBytes bounds what is read; a real cache of
	// sessionCacheMaxEntries holds a few KiB per entry.
	sessionCacheMaxBytes = 256 << 10
	// sessionCacheMaxEntries bounds the servers kept; the oldest go first.
	sessionCacheMaxEntries = 32
	// sessionMaxAge drops entries no server would resume anyway: TLS 1.3
	// tickets live at most 7 days (RFC 8446, 4.6.1).
	sessionMaxAge = 7 * 24 * time.Hour
	// sessionCacheVersion is the file's format.
	sessionCacheVersion = 1
)

// sessionFile is the cache file's content.
type sessionFile struct {
	Version  int                     `json:"version"`
	Sessions map[string]sessionEntry `json:"sessions"`
}

// sessionEntry is one server's session: the ticket and the client-side
// state (tls.SessionState.Bytes) that resume it.
type sessionEntry struct {
	Ticket []byte    `json:"ticket"`
	State  []byte    `json:"state"`
	Saved  time.Time `json:"saved"`
}

// fileSessionCache is a tls.ClientSessionCache kept in a file. Its keys
// are the TLS cache key (the server name) prefixed by the CA pin the
// connection trusts, so a session made under one pin is never offered
// under another.
type fileSessionCache struct {
	path string
	pin  string
	now  func() time.Time

	mu     sync.Mutex
	loaded bool
	mem    map[string]sessionEntry
}

var _ tls.ClientSessionCache = (*fileSessionCache)(nil)

// newFileSessionCache is the cache of the CA pinned by fingerprint pin,
// in dir.
func newFileSessionCache(dir, pin string) *fileSessionCache {
	return &fileSessionCache{path: filepath.Join(dir, sessionCacheFile), pin: pin, now: time.Now}
}

// Get implements tls.ClientSessionCache.
func (c *fileSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		c.mem, c.loaded = readSessionFile(c.path), true
	}
	e, ok := c.mem[c.pin+"|"+key]
	if !ok || c.now().Sub(e.Saved) > sessionMaxAge {
		return nil, false
	}
	st, err := tls.ParseSessionState(e.State)
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(e.Ticket, st)
	if err != nil {
		return nil, false
	}
	return cs, true
}

// Put implements tls.ClientSessionCache: it records (or, for nil, drops)
// the session and rewrites the file. Errors are not the command's: a
// session that is not kept costs the next invocation a full handshake.
func (c *fileSessionCache) Put(key string, cs *tls.ClientSessionState) {
	var e sessionEntry
	if cs != nil {
		ticket, st, err := cs.ResumptionState()
		if err != nil || st == nil || len(ticket) == 0 {
			return
		}
		b, err := st.Bytes()
		if err != nil {
			return
		}
		e = sessionEntry{Ticket: ticket, State: b, Saved: c.now().UTC()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Read again: another otherix process may have saved its sessions
	// since this one started.
	m := readSessionFile(c.path)
	k := c.pin + "|" + key
	if cs == nil {
		if _, ok := m[k]; !ok {
			return
		}
		delete(m, k)
	} else {
		m[k] = e
	}
	c.mem, c.loaded = m, true
	_ = writeSessionFile(c.path, m, c.now())
}

// readSessionFile reads the cache; anything unsafe or unreadable is an
// empty cache.
func readSessionFile(path string) map[string]sessionEntry {
	empty := map[string]sessionEntry{}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return empty
	}
	defer f.Close()
	if !privateFile(f) {
		return empty
	}
	b, err := io.ReadAll(io.LimitReader(f, sessionCacheMaxBytes+1))
	if err != nil || len(b) > sessionCacheMaxBytes {
		return empty
	}
	var sf sessionFile
	if json.Unmarshal(b, &sf) != nil || sf.Version != sessionCacheVersion || sf.Sessions == nil {
		return empty
	}
	return sf.Sessions
}

// privateFile reports whether f is a regular file owned by this user that
// no one else may read or write.
func privateFile(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// writeSessionFile replaces the cache by rename: a temp file made 0600 in
// the same directory, so the path is never opened for writing (a symlink
// there is replaced, not followed). Expired and excess entries go.
func writeSessionFile(path string, m map[string]sessionEntry, now time.Time) error {
	keys := make([]string, 0, len(m))
	for k, e := range m {
		if now.Sub(e.Saved) > sessionMaxAge {
			delete(m, k)
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) > sessionCacheMaxEntries {
		sort.Slice(keys, func(i, j int) bool { return m[keys[i]].Saved.After(m[keys[j]].Saved) })
		for _, k := range keys[sessionCacheMaxEntries:] {
			delete(m, k)
		}
	}
	b, err := json.Marshal(sessionFile{Version: sessionCacheVersion, Sessions: m})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tls-sessions-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
