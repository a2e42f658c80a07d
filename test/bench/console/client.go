package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
)

// session is one console WebSocket as a client sees it: a reader goroutine
// (owned by the session; close ends it) turns binary frames into a stream
// the measurements wait on, and records how the session ended.
type session struct {
	ws *websocket.Conn

	mu      sync.Mutex
	buf     []byte        // output received and not yet consumed
	total   int64         // bytes received since the start
	lastAt  time.Time     // when the last binary frame arrived
	grew    chan struct{} // signalled (cap 1) when buf grows or the session ends
	code    int           // close code received (0 while open, 1006 if none)
	why     string        // the close frame's reason
	endedAt time.Time
	done    chan struct{}
	// replayed is closed when the agent's "replayed" control arrives: the
	// log tail is delivered, and what follows is live.
	replayed     chan struct{}
	replayedOnce sync.Once
	// keep, false for sessions that only count, drops the bytes.
	keep bool
	// delay, when set, sleeps after every frame: a slow reader.
	delay time.Duration
}

func newSession(ws *websocket.Conn, keep bool, delay time.Duration) *session {
	s := &session{ws: ws, grew: make(chan struct{}, 1), done: make(chan struct{}), replayed: make(chan struct{}),
		keep: keep, delay: delay}
	go s.read()
	return s
}

func (s *session) read() {
	defer close(s.done)
	for {
		typ, b, err := s.ws.ReadMessage()
		if err != nil {
			code, why := websocket.CloseAbnormalClosure, err.Error()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code, why = ce.Code, ce.Text
			}
			s.mu.Lock()
			s.code, s.why, s.endedAt = code, why, time.Now()
			s.mu.Unlock()
			s.signal()
			return
		}
		if typ == websocket.TextMessage {
			var c messages.ConsoleControl
			if json.Unmarshal(b, &c) == nil && c.Type == messages.ConsoleReplayed {
				s.replayedOnce.Do(func() { close(s.replayed) })
			}
		}
		if typ == websocket.BinaryMessage {
			now := time.Now()
			s.mu.Lock()
			if s.keep {
				s.buf = append(s.buf, b...)
			}
			s.total += int64(len(b))
			s.lastAt = now
			s.mu.Unlock()
			s.signal()
		}
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
	}
}

func (s *session) signal() {
	select {
	case s.grew <- struct{}{}:
	default:
	}
}

// waitFor waits until the output holds want, consumes it and what came
// before, and returns when it was seen.
func (s *session) waitFor(want []byte, within time.Duration) (time.Time, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if i := bytes.Index(s.buf, want); i >= 0 {
			s.buf = s.buf[i+len(want):]
			s.mu.Unlock()
			return time.Now(), nil
		}
		code := s.code
		tail := s.buf[max(0, len(s.buf)-200):]
		s.mu.Unlock()
		if code != 0 {
			return time.Time{}, fmt.Errorf("session closed (%d) before %q arrived; last output %q", code, want, tail)
		}
		select {
		case <-s.grew:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("%q not seen within %s; last output %q", want, within, tail)
		}
	}
}

// waitReplayed waits for the end of the log's replay, then drops what was
// replayed: what follows is live output.
func (s *session) waitReplayed(within time.Duration) error {
	select {
	case <-s.replayed:
	case <-s.done:
		return fmt.Errorf("session ended before the replay did: %s", s.reason())
	case <-time.After(within):
		return fmt.Errorf("no end of replay within %s", within)
	}
	s.mu.Lock()
	s.buf = s.buf[:0]
	s.mu.Unlock()
	return nil
}

// drain drops the output received so far, after waiting quiet for d.
func (s *session) drain(d time.Duration) {
	time.Sleep(d)
	s.mu.Lock()
	s.buf = s.buf[:0]
	s.mu.Unlock()
}

// waitTotal waits until n bytes have arrived since the start.
func (s *session) waitTotal(n int64, within time.Duration) (time.Time, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		total, at, code := s.total, s.lastAt, s.code
		s.mu.Unlock()
		if total >= n {
			return at, nil
		}
		if code != 0 {
			return time.Time{}, fmt.Errorf("session closed (%d) after %d of %d bytes", code, total, n)
		}
		select {
		case <-s.grew:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("%d of %d bytes within %s", total, n, within)
		}
	}
}

func (s *session) counted() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ended is the close code and when it came (0 while open).
func (s *session) ended() (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.endedAt
}

// reason is the close frame's text (or the read error without one).
func (s *session) reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.why
}

func (s *session) type_(p []byte) error { return s.ws.WriteMessage(websocket.BinaryMessage, p) }

// close sends a normal close and waits for the reader.
func (s *session) close() {
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
	}
	_ = s.ws.Close()
	<-s.done
}

// roundTrips types n keystrokes one at a time and times each until its echo
// arrives. keys rotates through printable letters; every lineEvery
// keystrokes, newline (untimed, then drained) ends the line, for a guest
// whose tty buffers a line.
func roundTrips(s *session, n, lineEvery int, newline []byte, settle time.Duration) ([]time.Duration, error) {
	const keys = "abcdefghijklmnopqrstuvwxyz"
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		k := []byte{keys[i%len(keys)]}
		t0 := time.Now()
		if err := s.type_(k); err != nil {
			return out, err
		}
		at, err := s.waitFor(k, 10*time.Second)
		if err != nil {
			return out, fmt.Errorf("keystroke %d: %w", i, err)
		}
		out = append(out, at.Sub(t0))
		if lineEvery > 0 && (i+1)%lineEvery == 0 {
			if err := s.type_(newline); err != nil {
				return out, err
			}
			s.drain(settle)
		}
	}
	return out, nil
}
