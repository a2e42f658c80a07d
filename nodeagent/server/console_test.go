package server

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// These tests attach to the console route over the agent's real mutual TLS,
// as the control plane does, with the fake backend's real console hubs.

func dialConsole(t *testing.T, p pki, base, path string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{p.control}, RootCAs: p.ca.Pool(), ServerName: "n1", MinVersion: tls.VersionTLS12}}
	ws, resp, err := d.Dial("wss://"+strings.TrimPrefix(base, "https://")+path, nil)
	if ws != nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

func mustDial(t *testing.T, p pki, base, path string) *websocket.Conn {
	t.Helper()
	ws, resp, err := dialConsole(t, p, base, path)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", path, err, status)
	}
	return ws
}

// refusal dials and expects an error envelope with status and code.
func refusal(t *testing.T, p pki, base, path string, status int, code string) {
	t.Helper()
	_, resp, err := dialConsole(t, p, base, path)
	if err == nil || resp == nil {
		t.Fatalf("dial %s: %v, want HTTP %d", path, err, status)
	}
	defer resp.Body.Close()
	var env apierror.Body
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || json.Unmarshal(b, &env) != nil || env.Error.Code != code {
		t.Fatalf("dial %s: HTTP %d %s, want %d %s", path, resp.StatusCode, b, status, code)
	}
}

func readHello(t *testing.T, ws *websocket.Conn) messages.ConsoleControl {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil || mt != websocket.TextMessage {
		t.Fatalf("hello: type %d %q %v", mt, b, err)
	}
	var c messages.ConsoleControl
	if err := json.Unmarshal(b, &c); err != nil || c.Type != "hello" {
		t.Fatalf("hello: %q %v", b, err)
	}
	return c
}

// readOutput reads binary frames until their bytes contain want.
func readOutput(t *testing.T, ws *websocket.Conn, want string) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	for !bytes.Contains(got, []byte(want)) {
		mt, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %q, got %q: %v", want, got, err)
		}
		if mt == websocket.TextMessage && isReplayed(b) {
			continue
		}
		if mt != websocket.BinaryMessage {
			t.Fatalf("unexpected frame type %d: %q", mt, b)
		}
		got = append(got, b...)
	}
	return string(got)
}

func isReplayed(b []byte) bool {
	var c messages.ConsoleControl
	return json.Unmarshal(b, &c) == nil && c.Type == messages.ConsoleReplayed
}

// readReplay reads the replay that follows hello: binary frames up to the
// "replayed" control, which must come.
func readReplay(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	for {
		mt, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("replay: got %q, then %v", got, err)
		}
		if mt == websocket.TextMessage {
			if !isReplayed(b) {
				t.Fatalf("replay: unexpected control %q", b)
			}
			return string(got)
		}
		got = append(got, b...)
	}
}

// readClose reads until the server's close frame and returns its code.
func readClose(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v, want a close frame", err)
		}
		return ce.Code
	}
}

func TestConsoleOverMutualTLS(t *testing.T) {
	p := newPKI(t)
	srv, fake := startAgentAPIWithFake(t, p)
	vmID := messages.NewID()
	path := "/v1/vms/" + vmID + "/console"

	w := mustDial(t, p, srv.URL, path+"?mode=interactive")
	hello := readHello(t, w)
	if hello.VM != vmID || hello.Mode != messages.ConsoleInteractive || hello.Phase != messages.PhaseRunning {
		t.Fatalf("hello: %+v", hello)
	}
	// The replay is exactly the log, and "replayed" marks its end before
	// any live output.
	if got := readReplay(t, w); got != "boot output\n" {
		t.Fatalf("replay: %q", got)
	}
	fc, _ := fake.console(vmID)

	// Keystrokes reach the serial line; output reaches every session.
	if err := w.WriteMessage(websocket.BinaryMessage, []byte("uname\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	_ = fc.qemu.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(fc.qemu, buf); err != nil || string(buf) != "uname\n" {
		t.Fatalf("serial line got %q %v", buf, err)
	}
	r := mustDial(t, p, srv.URL, path+"?mode=readonly")
	if h := readHello(t, r); h.Mode != messages.ConsoleReadOnly {
		t.Fatalf("read-only hello: %+v", h)
	}
	readOutput(t, r, "boot output\n")
	if _, err := fc.qemu.Write([]byte("Linux\n")); err != nil {
		t.Fatal(err)
	}
	readOutput(t, w, "Linux\n")
	readOutput(t, r, "Linux\n")

	// Resize is recorded and told to later sessions.
	if err := w.WriteJSON(messages.ConsoleControl{Type: "resize", Cols: 120, Rows: 40}); err != nil {
		t.Fatal(err)
	}
	if !testutil.Until(10*time.Second, 10*time.Millisecond, func() bool { cols, _ := fc.hub.Size(); return cols == 120 }) {
		t.Fatal("resize not recorded")
	}
	if h := readHello(t, mustDial(t, p, srv.URL, path+"?mode=readonly")); h.Cols != 120 || h.Rows != 40 {
		t.Fatalf("hello after resize: %+v", h)
	}

	refusal(t, p, srv.URL, path+"?mode=interactive", http.StatusConflict, "console_busy")
	refusal(t, p, srv.URL, "/v1/vms/"+unknownVM+"/console", http.StatusNotFound, "vm_not_found")
	refusal(t, p, srv.URL, "/v1/vms/"+stoppedVM+"/console", http.StatusConflict, "vm_not_running")
	refusal(t, p, srv.URL, path+"?mode=root", http.StatusBadRequest, "invalid_field")

	// Force takes over; the previous writer learns why.
	w2 := mustDial(t, p, srv.URL, path+"?mode=interactive&force=true")
	readHello(t, w2)
	if code := readClose(t, w); code != messages.ConsoleTakenOver {
		t.Fatalf("displaced writer closed with %d, want %d", code, messages.ConsoleTakenOver)
	}

	// A writer that vanishes (no close frame) frees the slot.
	w2.UnderlyingConn().Close()
	var w3 *websocket.Conn
	var err error
	if !testutil.Until(10*time.Second, 10*time.Millisecond, func() bool {
		var ws *websocket.Conn
		var resp *http.Response
		ws, resp, err = dialConsole(t, p, srv.URL, path+"?mode=interactive")
		if err == nil {
			w3 = ws
			return true
		}
		if resp == nil || resp.StatusCode != http.StatusConflict {
			t.Fatalf("interactive after the writer vanished: %v", err)
		}
		resp.Body.Close()
		return false
	}) {
		t.Fatalf("interactive after the writer vanished: %v", err)
	}
	readHello(t, w3)

	// QEMU exits: every session is closed with ConsoleVMStopped.
	fc.qemu.Close()
	if code := readClose(t, w3); code != messages.ConsoleVMStopped {
		t.Fatalf("writer closed with %d, want %d", code, messages.ConsoleVMStopped)
	}
	if code := readClose(t, r); code != messages.ConsoleVMStopped {
		t.Fatalf("reader closed with %d, want %d", code, messages.ConsoleVMStopped)
	}
}

func TestConsoleFrameOverLimitIsAFlood(t *testing.T) {
	p := newPKI(t)
	srv, _ := startAgentAPIWithFake(t, p)
	w := mustDial(t, p, srv.URL, "/v1/vms/"+messages.NewID()+"/console")
	readHello(t, w)
	if err := w.WriteMessage(websocket.BinaryMessage, make([]byte, messages.ConsoleMaxFrame+1)); err != nil {
		t.Fatal(err)
	}
	if code := readClose(t, w); code != messages.ConsoleInputFlood {
		t.Fatalf("closed with %d, want %d", code, messages.ConsoleInputFlood)
	}
}

func TestConsoleIdleClientIsClosed(t *testing.T) {
	defer func(ping, wait time.Duration) { consolePing, consolePongWait = ping, wait }(consolePing, consolePongWait)
	consolePing, consolePongWait = 50*time.Millisecond, 300*time.Millisecond
	p := newPKI(t)
	srv, _ := startAgentAPIWithFake(t, p)
	w := mustDial(t, p, srv.URL, "/v1/vms/"+messages.NewID()+"/console")
	w.SetPingHandler(func(string) error { return nil }) // never answers pings
	readHello(t, w)
	if code := readClose(t, w); code != messages.ConsoleIdleTimeout {
		t.Fatalf("closed with %d, want %d", code, messages.ConsoleIdleTimeout)
	}
}
