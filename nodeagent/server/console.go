package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
)

// Keepalive and write bounds of a console WebSocket; Handler copies them,
// so a test may shorten them before it builds its handler.
var (
	// consolePing is how often the agent pings the client.
	consolePing = 20 * time.Second
	// consolePongWait closes a session with ConsoleIdleTimeout when nothing,
	// not even a pong, came from the client for this long.
	consolePongWait = 60 * time.Second
	// consoleWriteWait bounds one frame to the client, so a stuck client
	// cannot hold its session's goroutine (the hub never waits on it).
	consoleWriteWait = 10 * time.Second
	// consoleCloseWait is how long to wait for the client's close reply.
	consoleCloseWait = time.Second
)

// upgrader of the console route. No Origin check on this hop: the only
// caller is the control plane, already authenticated by its client
// certificate (mutual TLS), never a browser; the control plane checks the
// browser's Origin on its own hop.
var upgrader = websocket.Upgrader{
	ReadBufferSize:  4 << 10,
	WriteBufferSize: 32 << 10,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// consoleTiming is the bounds above, fixed when the handler is built.
type consoleTiming struct{ ping, pongWait, writeWait, closeWait time.Duration }

func currentConsoleTiming() consoleTiming {
	return consoleTiming{ping: consolePing, pongWait: consolePongWait, writeWait: consoleWriteWait, closeWait: consoleCloseWait}
}

// consoleGoingAway is the close code recorded when the client vanished; it
// is never heard by anyone.
const consoleGoingAway = websocket.CloseGoingAway

// console upgrades GET /v1/vms/{id}/console to a console session. Every
// refusal is an error envelope before the upgrade.
func (a *api) console(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	mode := q.Get("mode")
	if mode == "" {
		mode = messages.ConsoleInteractive
	}
	if mode != messages.ConsoleInteractive && mode != messages.ConsoleReadOnly {
		writeError(w, messages.Invalid("mode", "must be interactive or readonly, not %q", mode))
		return
	}
	force := false
	if v := q.Get("force"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, messages.Invalid("force", "must be true or false"))
			return
		}
		force = b
	}
	vm, err := a.b.VM(id)
	if err != nil {
		writeError(w, err)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, messages.Errorf(messages.KindInvalid, "websocket_required", "the console is a WebSocket: send an upgrade request"))
		return
	}
	s, err := a.b.Console(id, mode, force)
	if err != nil {
		writeError(w, err)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has answered the client already.
		s.Close(consoleGoingAway, "upgrade failed")
		return
	}
	a.log.Info("console attached", "vm", id, "mode", mode, "force", force)
	hello := messages.ConsoleControl{Type: "hello", VM: id, Mode: mode, Phase: vm.Phase}
	hello.Cols, hello.Rows = s.Size()
	code := serveConsole(ws, s, hello, a.timing)
	a.log.Info("console detached", "vm", id, "mode", mode, "code", code)
}

// serveConsole carries s over ws until either ends, and returns the close
// code sent. This goroutine is ws's only data writer; the reader and pinger
// goroutines it starts are awaited before it returns.
func serveConsole(ws *websocket.Conn, s *console.Session, hello messages.ConsoleControl, tm consoleTiming) int {
	defer ws.Close()
	readerDone := make(chan struct{})
	pingerDone := make(chan struct{})
	defer func() { <-pingerDone }()

	_ = ws.SetWriteDeadline(time.Now().Add(tm.writeWait))
	if err := ws.WriteJSON(hello); err != nil {
		s.Close(consoleGoingAway, "client gone")
		close(readerDone)
		close(pingerDone)
		return consoleGoingAway
	}
	go func() {
		defer close(readerDone)
		readConsole(ws, s, tm.pongWait)
	}()
	go func() {
		defer close(pingerDone)
		pingConsole(ws, s, tm.ping, tm.writeWait)
	}()

	// "replayed" follows the last frame of the log's replay (at once when
	// there is none): a client can tell old output, whose terminal queries
	// it must not answer, from live output.
	replayed := false
	announce := func() bool {
		if replayed || s.Replaying() {
			return true
		}
		replayed = true
		_ = ws.SetWriteDeadline(time.Now().Add(tm.writeWait))
		if err := ws.WriteJSON(messages.ConsoleControl{Type: messages.ConsoleReplayed}); err != nil {
			s.Close(consoleGoingAway, "client gone")
			return false
		}
		return true
	}
	for announce() {
		b, err := s.Next(context.Background()) // returns once s closes
		if err != nil {
			break
		}
		_ = ws.SetWriteDeadline(time.Now().Add(tm.writeWait))
		if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			s.Close(consoleGoingAway, "client gone")
			break
		}
	}
	ce := s.Err()
	code, reason := consoleGoingAway, "closed"
	if ce != nil {
		code, reason = ce.Code, ce.Reason
	}
	if len(reason) > 100 {
		reason = reason[:100] // a close frame's reason fits in 123 bytes
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(tm.writeWait))
	// Give the client a moment to answer the close, then drop it.
	_ = ws.SetReadDeadline(time.Now().Add(tm.closeWait))
	<-readerDone
	return code
}

// readConsole takes the client's frames: binary is input for the guest,
// text is a ConsoleControl. It closes s when the client goes away, stops
// answering pings, or floods.
func readConsole(ws *websocket.Conn, s *console.Session, pongWait time.Duration) {
	_ = ws.SetReadDeadline(time.Now().Add(pongWait))
	ws.SetPongHandler(func(string) error {
		if s.Err() != nil {
			return nil // closing: keep the close wait short
		}
		return ws.SetReadDeadline(time.Now().Add(pongWait))
	})
	for {
		mt, r, err := ws.NextReader()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.Close(messages.ConsoleIdleTimeout, "no pong within the keepalive window")
			} else {
				s.Close(consoleGoingAway, "client gone")
			}
			return
		}
		// Read one byte past the limit to tell an oversized frame.
		b, err := io.ReadAll(io.LimitReader(r, messages.ConsoleMaxFrame+1))
		if err != nil {
			s.Close(consoleGoingAway, "client gone")
			return
		}
		if len(b) > messages.ConsoleMaxFrame {
			s.Close(messages.ConsoleInputFlood, "a frame over 32 KiB")
			return
		}
		if s.Err() != nil {
			return
		}
		_ = ws.SetReadDeadline(time.Now().Add(pongWait))
		switch mt {
		case websocket.BinaryMessage:
			// A read-only session's keystrokes are dropped: it cannot
			// type, and saying so on every key would be noise.
			if err := s.Write(b); err != nil && !errors.Is(err, console.ErrReadOnly) {
				return // s is closed: flood, takeover or VM gone
			}
		case websocket.TextMessage:
			var c messages.ConsoleControl
			if json.Unmarshal(b, &c) == nil && c.Type == "resize" {
				s.Resize(c.Cols, c.Rows)
			}
		}
		if s.Err() != nil {
			return
		}
	}
}

// pingConsole pings the client until s closes.
func pingConsole(ws *websocket.Conn, s *console.Session, every, writeWait time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.Done():
			return
		case <-t.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				s.Close(consoleGoingAway, "client gone")
				return
			}
		}
	}
}
