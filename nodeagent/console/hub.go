// Package console multiplexes a VM's serial line: a Hub owns the connection
// to QEMU's serial chardev socket, writes everything the guest prints into
// the VM's bounded on-disk log, and fans it out to attached sessions. One
// session at a time may type (interactive); any number may watch (readonly).
// Every session has a bounded outbound queue, so a client that does not keep
// up is dropped instead of growing the agent's memory.
//
// The wire protocol a session is carried over (frames, close codes, limits)
// is messages/console.go; nodeagent/server bridges sessions to WebSockets.
package console

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// Defaults of Options.
const (
	DefaultQueueBytes = 256 << 10
	DefaultSlowGrace  = 2 * time.Second
	// hardQueueFactor times QueueBytes is what a session may hold at all,
	// grace or not: the bound on memory per session.
	hardQueueFactor    = 4
	DefaultInputWindow = time.Second
	DefaultInputBytes  = 256 << 10
	DefaultInputStall  = 10 * time.Second
	// readBuf is one read from the serial socket, and so at most one
	// frame's worth of output.
	readBuf = messages.ConsoleMaxFrame
)

// Options tune a hub; zero values take the defaults.
type Options struct {
	// QueueBytes is how much unsent output a session may hold for long; a
	// session above it for SlowGrace, or above 4x it at any moment, is
	// closed with ConsoleTooSlow. The grace lets a client that reads at full
	// speed ride out a burst faster than its link.
	QueueBytes int
	SlowGrace  time.Duration
	// InputBytes is how much input an interactive session may send per
	// InputWindow; more is closed with ConsoleInputFlood.
	InputBytes  int
	InputWindow time.Duration
	// InputStall is how long one write to the serial socket may block (QEMU
	// stops reading when the guest does not drain its UART) before the
	// sender is closed with ConsoleInputFlood.
	InputStall time.Duration
	Log        *slog.Logger
	// Now is the clock of the input rate window.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.SlowGrace <= 0 {
		o.SlowGrace = DefaultSlowGrace
	}
	if o.InputBytes <= 0 {
		o.InputBytes = DefaultInputBytes
	}
	if o.InputWindow <= 0 {
		o.InputWindow = DefaultInputWindow
	}
	if o.InputStall <= 0 {
		o.InputStall = DefaultInputStall
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Hub is one VM's serial line and the sessions attached to it. It lives as
// long as the connection to QEMU: created when the agent starts or re-adopts
// QEMU, ended by QEMU exiting (serial EOF) or by Close.
type Hub struct {
	opts Options
	conn net.Conn         // QEMU's serial socket
	log  *qemu.SerialLog  // owned by the caller; the hub only writes it
	done chan struct{}    // closed when the reader has ended every session
	wmu  sync.Mutex       // serialises input to conn
	end  sync.Once        // closes conn once
	stop chan closeReason // Close's reason for the reader, buffered 1

	mu       sync.Mutex
	sessions map[*Session]struct{}
	writer   *Session // the interactive session, if any
	closed   bool     // no more attaches
	cols     int      // last terminal size a client reported
	rows     int
}

type closeReason struct {
	code   int
	reason string
}

// Dial connects to QEMU's serial socket at path and starts a hub on it.
func Dial(path string, log *qemu.SerialLog, opts Options) (*Hub, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("console: connect serial socket: %w", err)
	}
	return New(conn, log, opts), nil
}

// New starts a hub over conn, which it owns from now on. log receives every
// byte the guest prints; it may be nil (tests).
func New(conn net.Conn, log *qemu.SerialLog, opts Options) *Hub {
	opts.defaults()
	h := &Hub{opts: opts, conn: conn, log: log, done: make(chan struct{}),
		stop: make(chan closeReason, 1), sessions: map[*Session]struct{}{}}
	go h.read()
	return h
}

// Done is closed once the serial line has ended and every session with it.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Close ends the hub: every session is closed with code (ConsoleAgentGone
// when the agent stops, ConsoleVMStopped when QEMU is known to be gone) and
// the serial socket is disconnected, which leaves QEMU running. It waits for
// the reader goroutine.
func (h *Hub) Close(code int, reason string) {
	select {
	case h.stop <- closeReason{code, reason}:
	default: // already closing
	}
	h.disconnect()
	<-h.done
}

func (h *Hub) disconnect() { h.end.Do(func() { _ = h.conn.Close() }) }

// read copies the guest's output into the log and to every session until
// the serial line ends, then closes every session.
func (h *Hub) read() {
	defer close(h.done)
	defer h.disconnect()
	buf := make([]byte, readBuf)
	var logErr error
	for {
		n, err := h.conn.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...) // shared, never modified
			h.mu.Lock()
			if h.log != nil {
				// Under mu, so an attach's replay and its live output
				// neither overlap nor leave a gap.
				if _, werr := h.log.Write(chunk); werr != nil && logErr == nil {
					logErr = werr
					h.opts.Log.Warn("write serial log", "err", werr)
				}
			}
			for s := range h.sessions {
				s.deliver(chunk)
			}
			h.mu.Unlock()
		}
		if err != nil {
			cr := closeReason{messages.ConsoleVMStopped, "the VM stopped"}
			select {
			case cr = <-h.stop:
			default:
				if !errors.Is(err, io.EOF) {
					h.opts.Log.Warn("serial console", "err", err)
				}
			}
			h.mu.Lock()
			h.closed = true
			list := make([]*Session, 0, len(h.sessions))
			for s := range h.sessions {
				list = append(list, s)
			}
			h.mu.Unlock()
			for _, s := range list {
				s.Close(cr.code, cr.reason)
			}
			return
		}
	}
}

// Attach opens a session: mode is messages.ConsoleInteractive or
// messages.ConsoleReadOnly. A second interactive session is refused with
// ErrBusy unless force, which closes the current writer with
// ConsoleTakenOver. The session starts with the last ConsoleReplayBytes of
// the log queued, followed by live output.
func (h *Hub) Attach(mode string, force bool) (*Session, error) {
	if mode != messages.ConsoleInteractive && mode != messages.ConsoleReadOnly {
		return nil, fmt.Errorf("%w %q", ErrMode, mode)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	var old *Session
	if mode == messages.ConsoleInteractive && h.writer != nil {
		if !force {
			h.mu.Unlock()
			return nil, ErrBusy
		}
		old = h.writer
		h.writer = nil
		delete(h.sessions, old)
	}
	s := newSession(h, mode)
	if h.log != nil {
		if tail, err := h.log.Tail(messages.ConsoleReplayBytes); err == nil {
			s.pending = append(s.pending, tail...)
			s.replay = len(tail)
		} else {
			h.opts.Log.Warn("read serial log for replay", "err", err)
		}
	}
	h.sessions[s] = struct{}{}
	if mode == messages.ConsoleInteractive {
		h.writer = s
	}
	h.mu.Unlock()
	if old != nil {
		old.Close(messages.ConsoleTakenOver, "another interactive session took over")
	}
	return s, nil
}

// detach forgets s, freeing the writer slot if s held it.
func (h *Hub) detach(s *Session) {
	h.mu.Lock()
	delete(h.sessions, s)
	if h.writer == s {
		h.writer = nil
	}
	h.mu.Unlock()
}

// Size is the last terminal size a client reported (0, 0 if none).
func (h *Hub) Size() (cols, rows int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cols, h.rows
}

func (h *Hub) setSize(cols, rows int) {
	h.mu.Lock()
	h.cols, h.rows = cols, rows
	h.mu.Unlock()
}

// Sessions is how many sessions are attached.
func (h *Hub) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// input writes p to the serial line for the writer s. A write that QEMU does
// not take within InputStall is a flood.
func (h *Hub) input(s *Session, p []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.mu.Lock()
	writer := h.writer == s
	h.mu.Unlock()
	if !writer {
		return ErrClosed // taken over or closed meanwhile
	}
	_ = h.conn.SetWriteDeadline(time.Now().Add(h.opts.InputStall))
	_, err := h.conn.Write(p)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errFlood
		}
		return fmt.Errorf("console: write serial socket: %w", err)
	}
	return nil
}
