package agenttest

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
)

// The fake console speaks the protocol of messages/console.go: at attach a
// hello text frame, then a replay ("replay of <id>\r\n"), then it echoes
// every binary frame it receives; text frames (resize) are recorded. Tests
// end sessions with CloseConsoles and flood them with FloodConsoles.

// consoleSession is one attached console of the fake.
type consoleSession struct {
	vm, mode string
	conn     *websocket.Conn
	wmu      sync.Mutex // one writer at a time, as gorilla requires
}

func (s *consoleSession) write(typ int, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return s.conn.WriteMessage(typ, b)
}

// consoleState is the fake's console bookkeeping, guarded by Agent.mu.
type consoleState struct {
	sessions map[*consoleSession]bool
	// refuse answers the next attaches with this status and code before
	// the upgrade (0: attach).
	refuseStatus int
	refuseCode   string
	// controls receives every text frame a client sends; ended one value
	// per session that ended (the peer's close code, or -1 for a broken
	// connection).
	controls chan messages.ConsoleControl
	ended    chan int
	attached chan string
}

func (a *Agent) consoles() *consoleState {
	if a.con == nil {
		a.con = &consoleState{sessions: map[*consoleSession]bool{},
			controls: make(chan messages.ConsoleControl, 64), ended: make(chan int, 64), attached: make(chan string, 64)}
	}
	return a.con
}

// RefuseConsoles makes the next attaches fail before the upgrade with status
// and code (status 0 attaches again).
func (a *Agent) RefuseConsoles(status int, code string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.consoles()
	c.refuseStatus, c.refuseCode = status, code
}

// ConsoleControls delivers the text frames clients sent, decoded.
func (a *Agent) ConsoleControls() <-chan messages.ConsoleControl {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.consoles().controls
}

// ConsoleEnded delivers, per session that ended, the close code its peer
// sent (-1 when the connection broke without one).
func (a *Agent) ConsoleEnded() <-chan int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.consoles().ended
}

// ConsoleAttached delivers "<vm> <mode>" per session attached.
func (a *Agent) ConsoleAttached() <-chan string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.consoles().attached
}

func (a *Agent) sessions() []*consoleSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*consoleSession
	for s := range a.consoles().sessions {
		out = append(out, s)
	}
	return out
}

// CloseConsoles ends every attached session with a close frame of code and
// reason, as the agent does when QEMU exits (messages.ConsoleVMStopped).
func (a *Agent) CloseConsoles(code int, reason string) {
	for _, s := range a.sessions() {
		_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(5*time.Second))
	}
}

// BreakConsoles cuts every session's connection without a close frame, as
// an agent that dies does.
func (a *Agent) BreakConsoles() {
	for _, s := range a.sessions() {
		_ = s.conn.NetConn().Close()
	}
}

// FloodConsoles writes frames binary frames of size bytes to every session
// and returns how many frames it wrote before a write failed, once it is
// done. It blocks while the peer applies backpressure.
func (a *Agent) FloodConsoles(frames, size int) int {
	buf := []byte(strings.Repeat("x", size))
	n := 0
	for _, s := range a.sessions() {
		for range frames {
			if s.write(websocket.BinaryMessage, buf) != nil {
				break
			}
			n++
		}
	}
	return n
}

// console serves GET /v1/vms/{id}/console.
func (a *Agent) console(w http.ResponseWriter, r *http.Request, id string) {
	mode := r.URL.Query().Get("mode")
	if mode != messages.ConsoleInteractive && mode != messages.ConsoleReadOnly {
		writeError(w, http.StatusBadRequest, "invalid_parameter", "mode: interactive or readonly")
		return
	}
	a.mu.Lock()
	c := a.consoles()
	status, code := c.refuseStatus, c.refuseCode
	a.mu.Unlock()
	switch {
	case id == "missing":
		writeError(w, http.StatusNotFound, "vm_not_found", "vm \"missing\" not found")
		return
	case status != 0:
		writeError(w, status, code, "console refused by the fake agent: "+code)
		return
	}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(messages.ConsoleMaxFrame)
	s := &consoleSession{vm: id, mode: mode, conn: conn}
	a.mu.Lock()
	c.sessions[s] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(c.sessions, s)
		a.mu.Unlock()
		_ = conn.Close()
	}()
	hello, _ := json.Marshal(messages.ConsoleControl{Type: "hello", VM: id, Mode: mode, Phase: messages.PhaseRunning})
	if s.write(websocket.TextMessage, hello) != nil || s.write(websocket.BinaryMessage, []byte("replay of "+id+"\r\n")) != nil {
		c.ended <- -1
		return
	}
	select {
	case c.attached <- id + " " + mode:
	default:
	}
	for {
		typ, b, err := conn.ReadMessage()
		if err != nil {
			code := -1
			var ce *websocket.CloseError
			if asClose(err, &ce) {
				code = ce.Code
			}
			select {
			case c.ended <- code:
			default:
			}
			return
		}
		switch typ {
		case websocket.BinaryMessage:
			if mode == messages.ConsoleReadOnly {
				continue // a reader's input goes nowhere
			}
			if s.write(websocket.BinaryMessage, b) != nil {
				return
			}
		case websocket.TextMessage:
			var cc messages.ConsoleControl
			if json.Unmarshal(b, &cc) == nil {
				select {
				case c.controls <- cc:
				default:
				}
			}
		}
	}
}

func asClose(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}
