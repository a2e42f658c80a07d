package console

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
)

// errFlood is input the serial line did not take in time.
var errFlood = errors.New("console: input flood")

// Session is one client attached to a hub. Output is read with Next; input
// (interactive only) goes in with Write. Whoever carries the session (the
// WebSocket bridge) must Close it when its client goes away, which frees
// the writer slot.
type Session struct {
	hub  *Hub
	mode string

	mu      sync.Mutex
	pending []byte        // output not yet taken by Next, at most 4x QueueBytes
	over    time.Time     // since when pending has been above QueueBytes
	replay  int           // bytes at the head of pending that are the log's replay
	peak    int           // high-water mark of len(pending), for tests
	ready   chan struct{} // signalled (cap 1) when pending grows or on close
	closed  *ClosedError
	done    chan struct{}
	// input accounting for the flood check
	winStart time.Time
	winBytes int
}

func newSession(h *Hub, mode string) *Session {
	return &Session{hub: h, mode: mode, ready: make(chan struct{}, 1), done: make(chan struct{})}
}

// Mode is messages.ConsoleInteractive or messages.ConsoleReadOnly.
func (s *Session) Mode() string { return s.mode }

// Done is closed when the session is closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session closed, or nil while it is open.
func (s *Session) Err() *ClosedError {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Size is the last terminal size any client of this VM reported.
func (s *Session) Size() (cols, rows int) { return s.hub.Size() }

// deliver queues output; a session whose queue stays above QueueBytes for
// SlowGrace, or would pass the hard bound, is closed with ConsoleTooSlow.
// Called by the hub's reader under h.mu.
func (s *Session) deliver(p []byte) {
	s.mu.Lock()
	if s.closed != nil {
		s.mu.Unlock()
		return
	}
	o := s.hub.opts
	next := len(s.pending) + len(p)
	lagging := false
	if next > o.QueueBytes {
		now := o.Now()
		if s.over.IsZero() {
			s.over = now
		}
		lagging = now.Sub(s.over) > o.SlowGrace
	}
	if next > hardQueueFactor*o.QueueBytes || lagging {
		s.mu.Unlock()
		// Not s.Close: that takes h.mu, which the reader holds.
		s.finish(messages.ConsoleTooSlow, "the client did not keep up with the output")
		delete(s.hub.sessions, s)
		if s.hub.writer == s {
			s.hub.writer = nil
		}
		return
	}
	s.pending = append(s.pending, p...)
	s.peak = max(s.peak, len(s.pending))
	s.mu.Unlock()
	s.signal()
}

func (s *Session) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Replaying reports whether part of the replay of the log is still to be
// returned by Next.
func (s *Session) Replaying() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replay > 0
}

// Next returns the next output, at most ConsoleMaxFrame bytes, waiting for
// some. Once the session is closed it returns what is still queued (output
// the guest printed before QEMU exited, say) and then the *ClosedError.
func (s *Session) Next(ctx context.Context) ([]byte, error) {
	for {
		s.mu.Lock()
		if len(s.pending) > 0 {
			n := min(len(s.pending), messages.ConsoleMaxFrame)
			if s.replay > 0 {
				// A frame never mixes the replay with live output, so the
				// carrier can say exactly where the replay ends.
				n = min(n, s.replay)
				s.replay -= n
			}
			out := append([]byte(nil), s.pending[:n]...)
			// Copy down rather than reslice, so the backing array does not
			// keep growing past the bound.
			rest := copy(s.pending, s.pending[n:])
			s.pending = s.pending[:rest]
			if rest <= s.hub.opts.QueueBytes {
				s.over = time.Time{}
			}
			if rest == 0 && cap(s.pending) > messages.ConsoleMaxFrame {
				// An idle session does not keep a burst's worth of memory.
				s.pending = nil
			}
			s.mu.Unlock()
			return out, nil
		}
		if s.closed != nil {
			err := s.closed
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Write sends input to the guest. It refuses a read-only session
// (ErrReadOnly) and a closed or superseded one; input over the session's
// rate, or that the serial line does not take in time, closes the session
// with ConsoleInputFlood. Frames over ConsoleMaxFrame are the carrier's to
// refuse.
func (s *Session) Write(p []byte) error {
	if s.mode != messages.ConsoleInteractive {
		return ErrReadOnly
	}
	if err := s.Err(); err != nil {
		return err
	}
	o := s.hub.opts
	now := o.Now()
	s.mu.Lock()
	if now.Sub(s.winStart) >= o.InputWindow {
		s.winStart, s.winBytes = now, 0
	}
	s.winBytes += len(p)
	over := s.winBytes > o.InputBytes
	s.mu.Unlock()
	if over {
		s.Close(messages.ConsoleInputFlood, "more input than the serial line takes")
		return s.Err()
	}
	if err := s.hub.input(s, p); err != nil {
		if errors.Is(err, errFlood) {
			s.Close(messages.ConsoleInputFlood, "the serial line did not take the input in time")
			return s.Err()
		}
		if cerr := s.Err(); cerr != nil {
			return cerr
		}
		return err
	}
	return nil
}

// Resize records the client's terminal size. A serial line has no window
// size: it is kept for later sessions, not sent to the guest.
func (s *Session) Resize(cols, rows int) {
	if cols <= 0 || rows <= 0 || cols > 10000 || rows > 10000 {
		return
	}
	s.hub.setSize(cols, rows)
}

// Close ends the session with a close code and reason, detaching it from the
// hub (freeing the writer slot). The first close wins; later ones do
// nothing. Output still queued stays readable through Next, except after
// ConsoleTooSlow, which drops it.
func (s *Session) Close(code int, reason string) {
	if s.finish(code, reason) {
		s.hub.detach(s)
	}
}

// finish marks the session closed and reports whether this call did.
func (s *Session) finish(code int, reason string) bool {
	s.mu.Lock()
	if s.closed != nil {
		s.mu.Unlock()
		return false
	}
	s.closed = &ClosedError{Code: code, Reason: reason}
	if code == messages.ConsoleTooSlow {
		s.pending = nil
	}
	close(s.done)
	s.mu.Unlock()
	s.signal()
	return true
}
