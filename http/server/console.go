package server

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
)

// Console proxy defaults (Config fields left zero).
const (
	// DefaultConsoleQueue is how many agent frames may wait for a slow
	// client: with frames of at most messages.ConsoleMaxFrame, a session
	// holds at most this × 32 KiB of output.
	DefaultConsoleQueue = 32
	// DefaultConsoleStall is how long a full queue (or one write to the
	// client) may block before the client is cut off as too slow.
	DefaultConsoleStall = 10 * time.Second
	// DefaultConsoleKeepalive is the ping interval towards the client; a
	// client silent (no pong, no frame) for twice as long is cut off.
	DefaultConsoleKeepalive = 20 * time.Second
	// consoleCloseWait is how long a closing session waits for the client
	// to answer its close frame before dropping the connection.
	consoleCloseWait = 2 * time.Second
)

// consoleToken issues a single-use console token (POST /v1/vms/:id/console).
// The body is optional: an empty one asks for an interactive console.
func (s *Server) consoleToken(c *gin.Context) {
	var req messages.ConsoleTokenRequest
	if c.Request.ContentLength != 0 {
		if err := decodeJSON(c, &req); err != nil {
			s.writeError(c, err)
			return
		}
	}
	tok, err := s.cp.IssueConsoleToken(c.Request.Context(), ownerOf(c), scopeOwner(c), c.Param("id"), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, tok)
}

// consoleWS serves GET /v1/vms/:id/console/ws?token=…: the token is the
// credential (a browser cannot set headers on a WebSocket). The agent's
// console is dialled first, so that its refusals (console_busy,
// vm_not_running) reach the client as ordinary JSON errors; only then is the
// client upgraded and the frames proxied both ways, unchanged.
func (s *Server) consoleWS(c *gin.Context) {
	if err := s.checkConsoleOrigin(c.Request); err != nil {
		s.deny(c, err)
		return
	}
	vmID := c.Param("id")
	agent, rec, err := s.cp.AttachConsole(c.Request.Context(), vmID, c.Query("token"))
	actor := anonymousActor
	if rec != nil {
		actor = rec.User
	}
	entry := messages.AuditEntry{Time: s.now().UTC(), Actor: actor, Action: "console.attach", Target: vmID,
		Result: "ok", Source: c.ClientIP(), RequestID: requestID(c)}
	if err != nil {
		s.writeError(c, err)
		entry.Result = c.GetString(ctxErrorCode)
		s.cp.Audit(entry)
		return
	}
	up := websocket.Upgrader{
		ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10,
		HandshakeTimeout: 10 * time.Second,
		// checkConsoleOrigin has decided already.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	client, err := up.Upgrade(c.Writer, c.Request, nil)
	if err != nil {
		// Upgrade has answered the client with an error status.
		_ = agent.Close()
		entry.Result = "upgrade_failed"
		s.cp.Audit(entry)
		return
	}
	entry.Result = "ok:" + rec.Mode
	s.cp.Audit(entry)
	p := newConsoleProxy(s.cfg, client, agent)
	p.run()
	if s.cfg.consoleEnded != nil {
		s.cfg.consoleEnded(p.code, p.high)
	}
}

// checkConsoleOrigin lets a console WebSocket be opened by a client that
// sends no Origin (the CLI), by a page of the API's own host, or by an
// origin in Config.ConsoleOrigins; any other page is refused, so a site the
// user visits cannot drive a console with a token it got hold of.
func (s *Server) checkConsoleOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	refused := apiError(messages.KindForbidden, "origin_refused",
		"a console cannot be opened from %q; add it to http.console_origins", origin).WithDetail("origin", origin)
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return refused
	}
	if strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, o := range s.cfg.ConsoleOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), u.Scheme+"://"+u.Host) {
			return nil
		}
	}
	return refused
}

// consoleFrame is one WebSocket message.
type consoleFrame struct {
	typ  int
	data []byte
}

// consoleProxy joins a client's WebSocket and an agent's console. Three
// goroutines, owned by run, which waits for them: the agent reader feeds a
// bounded queue, the client writer drains it (and pings), the client reader
// forwards input to the agent. The first end wins and decides the close code
// the client gets.
type consoleProxy struct {
	client, agent *websocket.Conn
	queue         chan consoleFrame
	stall         time.Duration
	keepalive     time.Duration

	once sync.Once
	done chan struct{}
	// code and reason are the close the client got; high is the queue's
	// high-water mark. Set before done closes... (code, reason) or read
	// after run returns (high).
	code   int
	reason string
	high   int
	// readerDone closes when the client reader has stopped.
	readerDone chan struct{}
}

func newConsoleProxy(cfg Config, client, agent *websocket.Conn) *consoleProxy {
	return &consoleProxy{client: client, agent: agent,
		queue: make(chan consoleFrame, cfg.ConsoleQueue), stall: cfg.ConsoleStall, keepalive: cfg.ConsoleKeepalive,
		done: make(chan struct{}), readerDone: make(chan struct{})}
}

// run proxies until either side ends, then closes both connections.
func (p *consoleProxy) run() {
	p.client.SetReadLimit(messages.ConsoleMaxFrame)
	p.agent.SetReadLimit(messages.ConsoleMaxFrame)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); p.readAgent() }()
	go func() { defer wg.Done(); p.writeClient() }()
	go func() { defer wg.Done(); defer close(p.readerDone); p.readClient() }()
	<-p.done
	// Give the client a moment to answer the close frame, so it is not
	// lost to a reset, then drop both connections: that unblocks whatever
	// still reads or writes.
	select {
	case <-p.readerDone:
	case <-time.After(consoleCloseWait):
	}
	_ = p.client.Close()
	_ = p.agent.Close()
	wg.Wait()
}

// end closes the session once: the client gets code and reason, the agent a
// normal closure (the session, not the VM, is over).
func (p *consoleProxy) end(code int, reason string) {
	p.once.Do(func() {
		p.code, p.reason = code, reason
		deadline := time.Now().Add(time.Second)
		_ = p.client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
		_ = p.agent.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "client detached"), deadline)
		close(p.done)
	})
}

// readAgent queues the agent's frames for the client. A queue that stays
// full for the stall time means the client does not keep up: it is cut off
// (ConsoleTooSlow) rather than buffered without bound.
func (p *consoleProxy) readAgent() {
	stall := time.NewTimer(p.stall)
	defer stall.Stop()
	for {
		typ, data, err := p.agent.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == websocket.CloseNoStatusReceived:
				p.end(websocket.CloseNormalClosure, "")
			case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
				// The agent's verdict (VM stopped, taken over, input
				// flood) reaches the client unchanged.
				p.end(ce.Code, ce.Text)
			default:
				p.end(messages.ConsoleAgentGone, "the node's agent went away; the VM keeps running, attach again")
			}
			return
		}
		f := consoleFrame{typ: typ, data: data}
		select {
		case p.queue <- f:
		default:
			stall.Reset(p.stall)
			select {
			case p.queue <- f:
			case <-stall.C:
				p.end(messages.ConsoleTooSlow, "the client did not keep up with the output")
				return
			case <-p.done:
				return
			}
		}
		if n := len(p.queue); n > p.high {
			p.high = n
		}
	}
}

// writeClient sends queued frames and keepalive pings to the client.
func (p *consoleProxy) writeClient() {
	ping := time.NewTicker(p.keepalive)
	defer ping.Stop()
	for {
		select {
		case <-p.done:
			return
		case f := <-p.queue:
			_ = p.client.SetWriteDeadline(time.Now().Add(p.stall))
			if err := p.client.WriteMessage(f.typ, f.data); err != nil {
				if isTimeout(err) {
					p.end(messages.ConsoleTooSlow, "the client did not keep up with the output")
				} else {
					p.end(websocket.CloseGoingAway, "the client connection broke")
				}
				return
			}
		case <-ping.C:
			if err := p.client.WriteControl(websocket.PingMessage, nil, time.Now().Add(p.stall)); err != nil {
				p.end(websocket.CloseGoingAway, "the client connection broke")
				return
			}
		}
	}
}

// readClient forwards the client's frames (keystrokes, resize) to the agent.
// Any frame or pong from the client proves it alive.
func (p *consoleProxy) readClient() {
	alive := func() { _ = p.client.SetReadDeadline(time.Now().Add(2 * p.keepalive)) }
	alive()
	p.client.SetPongHandler(func(string) error { alive(); return nil })
	for {
		typ, data, err := p.client.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				p.end(websocket.CloseNormalClosure, "")
			case errors.Is(err, websocket.ErrReadLimit):
				p.end(websocket.CloseMessageTooBig, "a frame is over the console's limit")
			case isTimeout(err):
				p.end(messages.ConsoleIdleTimeout, "no answer to keepalive pings")
			default:
				p.end(websocket.CloseGoingAway, "the client connection broke")
			}
			return
		}
		alive()
		_ = p.agent.SetWriteDeadline(time.Now().Add(p.stall))
		if err := p.agent.WriteMessage(typ, data); err != nil {
			p.end(messages.ConsoleAgentGone, "the node's agent went away; the VM keeps running, attach again")
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
