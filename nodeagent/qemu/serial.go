package qemu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

// SerialLog is a bounded on-disk log of a guest's serial output, kept as
// two files, path (current) and path.1 (previous), each at most max/2
// bytes: rotation is one rename, never a rewrite, and at least the newest
// max/2 bytes always survive.
type SerialLog struct {
	path string
	half int64

	mu      sync.Mutex
	f       *os.File // path, opened for append
	size    int64    // of f
	oldSize int64    // of path.1
	total   int64    // bytes written since open, plus what was on disk then
	changed chan struct{}
	closed  bool
}

var _ io.Writer = (*SerialLog)(nil) // Pump is io.Copy into it

// OpenSerialLog opens (or creates) the log at path, appending to what an
// earlier agent left there. max is the bound on both files together.
func OpenSerialLog(path string, max int64) (*SerialLog, error) {
	if max < 2 {
		return nil, fmt.Errorf("qemu: serial log %s: max %d too small", path, max)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("qemu: serial log: %w", err)
	}
	l := &SerialLog{path: path, half: max / 2, f: f, changed: make(chan struct{})}
	if fi, err := f.Stat(); err == nil {
		l.size = fi.Size()
	}
	if fi, err := os.Stat(path + ".1"); err == nil {
		l.oldSize = fi.Size()
	}
	l.total = l.size + l.oldSize
	return l, nil
}

// Write appends p, rotating as needed; it wakes Changed waiters.
func (l *SerialLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, os.ErrClosed
	}
	n := 0
	for len(p) > 0 {
		if l.size >= l.half {
			if err := l.rotate(); err != nil {
				l.notify(n)
				return n, err
			}
		}
		chunk := p
		if room := l.half - l.size; int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		w, err := l.f.Write(chunk)
		n += w
		l.size += int64(w)
		l.total += int64(w)
		if err != nil {
			l.notify(n)
			return n, fmt.Errorf("qemu: serial log: %w", err)
		}
		p = p[w:]
	}
	l.notify(n)
	return n, nil
}

func (l *SerialLog) notify(n int) {
	if n > 0 {
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *SerialLog) rotate() error {
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("qemu: serial log rotate: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("qemu: serial log rotate: %w", err)
	}
	l.f.Close()
	l.f, l.oldSize, l.size = f, l.size, 0
	return nil
}

// Changed returns a channel closed by the next write after the call (and
// by Close). Take it before reading, so no write can fall in between.
func (l *SerialLog) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Pump copies the guest's output from conn (the serial socket) into the
// log until EOF or an error, and closes conn. EOF, including QEMU exiting,
// is a nil error.
func (l *SerialLog) Pump(conn net.Conn) error {
	defer conn.Close()
	_, err := io.Copy(l, conn)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("qemu: serial pump: %w", err)
	}
	return nil
}

// Tail returns the last n bytes kept, across both files.
func (l *SerialLog) Tail(n int64) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tail(n)
}

// Since returns what was written after offset off (a value Since returned
// before, or 0) and the offset to pass next time. Output that rotation has
// already dropped is skipped. This is what `logs -f` needs with Changed.
func (l *SerialLog) Since(off int64) ([]byte, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off > l.total || off < 0 {
		off = l.total // a log reopened since the caller's offset
	}
	b, err := l.tail(l.total - off)
	return b, l.total, err
}

func (l *SerialLog) tail(n int64) ([]byte, error) {
	if n > l.size+l.oldSize {
		n = l.size + l.oldSize
	}
	if n <= 0 {
		return []byte{}, nil
	}
	out := make([]byte, n)
	fromOld := n - l.size
	if fromOld > 0 {
		if err := readAt(l.path+".1", out[:fromOld], l.oldSize-fromOld); err != nil {
			return nil, err
		}
		return out, readAt(l.path, out[fromOld:], 0)
	}
	return out, readAt(l.path, out, l.size-n)
}

func readAt(path string, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("qemu: serial log: %w", err)
	}
	defer f.Close()
	if _, err := f.ReadAt(p, off); err != nil {
		return fmt.Errorf("qemu: serial log: %w", err)
	}
	return nil
}

// Close closes the file and wakes Changed waiters, now and from then on.
func (l *SerialLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.changed) // left closed: later Changed calls return at once
	return l.f.Close()
}
