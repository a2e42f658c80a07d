package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// fakeConsoles is the console part of fakeCP: tokens are "good-<vm>" and
// single use; attaching dials a real fake agent over mutual TLS.
type fakeConsoles struct {
	mu     sync.Mutex
	used   map[string]bool
	agents *agentclient.Client
	node   agentclient.Node
	lastTo messages.ConsoleTokenRequest
}

func (f *fakeCP) IssueConsoleToken(_ context.Context, user, owner, ref string, req messages.ConsoleTokenRequest) (*messages.ConsoleToken, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.consoles.mu.Lock()
	f.consoles.lastTo = req
	f.consoles.mu.Unlock()
	mode := req.Mode
	if mode == "" {
		mode = messages.ConsoleInteractive
	}
	return &messages.ConsoleToken{Token: "good-" + ref, URL: "/v1/vms/" + ref + "/console/ws?token=good-" + ref,
		Mode: mode, ExpiresAt: time.Now().Add(messages.ConsoleTokenTTL).UTC()}, nil
}

func (f *fakeCP) AttachConsole(ctx context.Context, ref, token string) (*websocket.Conn, *store.ConsoleTokenRecord, error) {
	c := &f.consoles
	c.mu.Lock()
	if token != "good-"+ref || c.used[token] {
		c.mu.Unlock()
		return nil, nil, store.ErrConsoleTokenInvalid
	}
	c.used[token] = true
	c.mu.Unlock()
	rec := &store.ConsoleTokenRecord{User: "u-admin", VM: ref, Mode: messages.ConsoleInteractive}
	if c.agents == nil {
		return nil, rec, messages.Errorf(messages.KindUnavailable, "node_unreachable", "no agent")
	}
	conn, err := c.agents.Console(ctx, c.node, ref, rec.Mode, false)
	if err != nil {
		var me *messages.Error
		if errors.As(err, &me) {
			return nil, rec, me
		}
		return nil, rec, err
	}
	return conn, rec, nil
}

// consoleEnv is a test server whose consoles reach a fake agent over mTLS.
type consoleEnv struct {
	s     *Server
	cp    *fakeCP
	ts    *httptest.Server
	agent *agenttest.Agent
	ended chan [2]int // code, queue high-water mark per session
}

func startConsoleEnv(t *testing.T, cfg Config) *consoleEnv {
	t.Helper()
	e := &consoleEnv{ended: make(chan [2]int, 8)}
	cfg.consoleEnded = func(code, high int) { e.ended <- [2]int{code, high} }
	e.s, e.cp, _ = newTestServer(t, cfg)
	p := agenttest.NewPKI(t)
	e.agent = agenttest.Start(t, p, "n1", nil)
	cert := p.ClientCert(t)
	e.cp.consoles.agents = agentclient.New(p.CA.Pool(), func() (*tls.Certificate, error) { return &cert, nil })
	e.cp.consoles.node = agentclient.Node{Name: "n1", Endpoint: e.agent.URL}
	e.ts = httptest.NewServer(e.s.Handler())
	t.Cleanup(e.ts.Close)
	return e
}

func (e *consoleEnv) client(t *testing.T) *client.Client {
	c, err := client.New(e.ts.URL, client.WithToken(tokenFor(security.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// attach gets a token and dials the console.
func (e *consoleEnv) attach(t *testing.T, vm string) *websocket.Conn {
	t.Helper()
	c := e.client(t)
	tok, err := c.ConsoleToken(t.Context(), vm, messages.ConsoleTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.DialConsole(t.Context(), tok)
	if err != nil {
		t.Fatalf("dial console: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func readFrame(t *testing.T, conn *websocket.Conn) (int, []byte) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, b, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return typ, b
}

func closeCode(t *testing.T, conn *websocket.Conn) int {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce.Code
		}
		t.Fatalf("want a close frame, got %v", err)
	}
}

// TestConsoleProxy: the hello, the replay and echoed input flow through the
// proxy unchanged, a resize frame reaches the agent, and the agent's close
// code (VM stopped) reaches the client.
func TestConsoleProxy(t *testing.T) {
	e := startConsoleEnv(t, Config{})
	conn := e.attach(t, "vm1")
	if <-e.agent.ConsoleAttached() != "vm1 interactive" {
		t.Fatal("wrong attach")
	}
	typ, b := readFrame(t, conn)
	var hello messages.ConsoleControl
	if typ != websocket.TextMessage || json.Unmarshal(b, &hello) != nil || hello.Type != "hello" || hello.VM != "vm1" {
		t.Fatalf("hello: %d %q", typ, b)
	}
	if typ, b = readFrame(t, conn); typ != websocket.BinaryMessage || string(b) != "replay of vm1\r\n" {
		t.Fatalf("replay: %d %q", typ, b)
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if typ, b = readFrame(t, conn); typ != websocket.BinaryMessage || string(b) != "ls\r" {
		t.Fatalf("echo: %d %q", typ, b)
	}
	resize, _ := json.Marshal(messages.ConsoleControl{Type: "resize", Cols: 120, Rows: 40})
	if err := conn.WriteMessage(websocket.TextMessage, resize); err != nil {
		t.Fatal(err)
	}
	if cc := <-e.agent.ConsoleControls(); cc.Type != "resize" || cc.Cols != 120 || cc.Rows != 40 {
		t.Fatalf("agent got %+v", cc)
	}
	e.agent.CloseConsoles(messages.ConsoleVMStopped, "the vm stopped")
	if code := closeCode(t, conn); code != messages.ConsoleVMStopped {
		t.Fatalf("client close code %d, want %d", code, messages.ConsoleVMStopped)
	}
	if got := <-e.ended; got[0] != messages.ConsoleVMStopped {
		t.Fatalf("session ended with %v", got)
	}

	// The token was single use.
	_, err := e.client(t).DialConsole(t.Context(), &messages.ConsoleToken{URL: "/v1/vms/vm1/console/ws?token=good-vm1"})
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 401 || ae.Code != "console_token_invalid" {
		t.Fatalf("reused token: %v", err)
	}
}

// TestConsoleAgentGone: an agent connection that breaks ends the client's
// session with ConsoleAgentGone; a client that leaves closes the agent side.
func TestConsoleAgentGone(t *testing.T) {
	e := startConsoleEnv(t, Config{})
	conn := e.attach(t, "vm1")
	readFrame(t, conn)
	readFrame(t, conn)
	e.agent.BreakConsoles()
	if code := closeCode(t, conn); code != messages.ConsoleAgentGone {
		t.Fatalf("client close code %d, want %d", code, messages.ConsoleAgentGone)
	}

	conn = e.attach(t, "vm2")
	readFrame(t, conn)
	readFrame(t, conn)
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	for code := range e.agent.ConsoleEnded() {
		if code == websocket.CloseNormalClosure {
			break
		}
	}
}

// TestConsoleRefusals: an agent refusal before the upgrade reaches the
// client as the agent's JSON error; bad tokens and foreign origins are
// refused before any agent is dialled.
func TestConsoleRefusals(t *testing.T) {
	e := startConsoleEnv(t, Config{ConsoleOrigins: []string{"https://console.example.com"}})
	c := e.client(t)
	e.agent.RefuseConsoles(http.StatusConflict, "console_busy")
	tok, err := c.ConsoleToken(t.Context(), "vm1", messages.ConsoleTokenRequest{Mode: messages.ConsoleInteractive})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DialConsole(t.Context(), tok)
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 409 || ae.Code != "console_busy" {
		t.Fatalf("busy: %v", err)
	}
	e.agent.RefuseConsoles(0, "")

	ws := func(path string, origin string) *httptest.ResponseRecorder {
		h := map[string]string{}
		if origin != "" {
			h["Origin"] = origin
		}
		return req{method: "GET", path: path, header: h}.do(t, e.s)
	}
	wantError(t, ws("/v1/vms/vm1/console/ws?token=bad", ""), 401, "console_token_invalid")
	wantError(t, ws("/v1/vms/vm1/console/ws", ""), 401, "console_token_invalid")
	wantError(t, ws("/v1/vms/vm1/console/ws?token=good-vm1", "https://evil.example.org"), 403, "origin_refused")
	wantError(t, ws("/v1/vms/vm1/console/ws?token=good-vm1", "null"), 403, "origin_refused")
	// Refused origins did not burn the token; a listed origin passes the
	// check (and, not being a WebSocket request, fails the upgrade).
	if rec := ws("/v1/vms/vm3/console/ws?token=good-vm3", "https://console.example.com"); rec.Code != http.StatusBadRequest {
		t.Fatalf("listed origin: %d %s", rec.Code, rec.Body)
	}
	if rec := ws("/v1/vms/vm2/console/ws?token=good-vm2", "http://example.com"); rec.Code != http.StatusBadRequest {
		t.Fatalf("same-host origin: %d %s", rec.Code, rec.Body)
	}
}

// TestConsoleTokenRoute: console needs vm/console, which a viewer lacks; the
// control plane's refusals pass through.
func TestConsoleTokenRoute(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	r := s.table["POST /v1/vms/:id/console"]
	if r.access != accessRBAC || r.resource != security.ResourceVM || r.verb != security.VerbConsole || r.idempotent {
		t.Fatalf("console token route: %+v", r)
	}
	if ws := s.table["GET /v1/vms/:id/console/ws"]; ws.access != accessPublic {
		t.Fatalf("console ws route: %+v", ws)
	}
	rec := req{method: "POST", path: "/v1/vms/web-1/console", body: `{"mode":"readonly"}`}.do(t, s)
	var tok messages.ConsoleToken
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || rec.Code != 200 || tok.Mode != messages.ConsoleReadOnly ||
		!strings.HasPrefix(tok.URL, "/v1/vms/web-1/console/ws?token=") || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("token: %d %s", rec.Code, rec.Body)
	}
	if rec := (req{method: "POST", path: "/v1/vms/web-1/console"}).do(t, s); rec.Code != 200 {
		t.Fatalf("no body: %d %s", rec.Code, rec.Body)
	}
	viewer := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleViewer)}
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/console", header: viewer}.do(t, s), 403, "forbidden")
	cp.err = messages.Errorf(messages.KindConflict, "vm_not_running", "vm web-1 is stopped")
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/console"}.do(t, s), 409, "vm_not_running")
	cp.err = messages.OutOfScope("vm", "web-1")
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/console"}.do(t, s), 404, "not_found")
}

// TestConsoleTooSlow: a client that never reads is cut off with
// ConsoleTooSlow once the bounded queue stays full; the proxy never holds
// more than the queue's frames, however much the agent sends.
func TestConsoleTooSlow(t *testing.T) {
	const queue = 4
	e := startConsoleEnv(t, Config{ConsoleQueue: queue, ConsoleStall: 300 * time.Millisecond})
	conn := e.attach(t, "vm1")
	<-e.agent.ConsoleAttached()
	// The agent writes 64 MiB, far beyond the queue, socket buffers
	// included; the proxy must give up instead of buffering it.
	sent := e.agent.FloodConsoles(2048, messages.ConsoleMaxFrame)
	got := <-e.ended
	if got[0] != messages.ConsoleTooSlow {
		t.Fatalf("session ended with %d, want %d", got[0], messages.ConsoleTooSlow)
	}
	if got[1] > queue {
		t.Fatalf("queue grew to %d frames, bound %d", got[1], queue)
	}
	if sent >= 2048 {
		t.Fatalf("the agent wrote all %d frames: nothing pushed back", sent)
	}
	_ = conn
}
