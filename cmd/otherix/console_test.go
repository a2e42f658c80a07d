package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
)

// stubConsoleAPI answers the two console endpoints as the API does for a
// running VM "web": a token, then a session with a hello, a replay and an
// echo of every keystroke; closeWith, when set, ends each session at once
// with that code after the replay.
func stubConsoleAPI(t *testing.T, closeWith int) (string, <-chan string) {
	modes := make(chan string, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/vms/web/console", func(w http.ResponseWriter, r *http.Request) {
		var req messages.ConsoleTokenRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Mode == "" {
			req.Mode = messages.ConsoleInteractive
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(messages.ConsoleToken{Token: "otc_x", Mode: req.Mode,
			URL: "/v1/vms/web/console/ws?token=otc_x&mode=" + req.Mode, ExpiresAt: time.Now().Add(time.Minute)})
	})
	mux.HandleFunc("GET /v1/vms/web/console/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		modes <- r.URL.Query().Get("mode")
		hello, _ := json.Marshal(messages.ConsoleControl{Type: "hello", VM: "web", Mode: "interactive", Phase: "running"})
		_ = conn.WriteMessage(websocket.TextMessage, hello)
		_ = conn.WriteMessage(websocket.BinaryMessage, []byte("\x1b]0;pw"))
		_ = conn.WriteMessage(websocket.BinaryMessage, []byte("ned\x07boot done\r\n"))
		if closeWith != 0 {
			_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(closeWith, "bye"))
			_, _, _ = conn.ReadMessage()
			return
		}
		for {
			typ, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if typ == websocket.BinaryMessage {
				_ = conn.WriteMessage(websocket.BinaryMessage, append([]byte("echo:"), b...))
			}
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, modes
}

// watchWriter is a buffer that reports when it first holds want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestConsoleCommand: with stdin a pipe, output is printed, typed input
// comes back echoed, and Ctrl+] detaches with exit 0 (what follows it is
// never sent).
func TestConsoleCommand(t *testing.T) {
	url, _ := stubConsoleAPI(t, 0)
	cfg := filepath.Join(t.TempDir(), "config")
	inR, inW := io.Pipe()
	out := &watchWriter{want: "echo:uname -a\r", seen: make(chan struct{})}
	seen := out.seen
	var errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runIO(context.Background(), []string{"--config", cfg, "--server", url, "vm", "console", "web"}, inR, out, &errOut)
	}()
	if _, err := inW.Write([]byte("uname -a\r")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-seen:
	case <-time.After(10 * time.Second):
		t.Fatalf("no echo; stdout %q", out.String())
	}
	if _, err := inW.Write([]byte{'x', escapeByte, 'y'}); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d; stderr %s", code, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl+] did not detach")
	}
	got := out.String()
	if !strings.HasPrefix(got, "\x1b]0;pwned\x07boot done\r\n") || strings.Contains(got, "echo:y") {
		t.Fatalf("stdout %q", got)
	}
	if !strings.Contains(errOut.String(), "Connected to web (escape: Ctrl+])") || !strings.Contains(errOut.String(), "Detached") {
		t.Fatalf("stderr %q", errOut.String())
	}
}

// TestConsoleCommandEnds: the server's close code decides the exit status
// and the message: a stopped VM is a normal end, a take-over an error.
func TestConsoleCommandEnds(t *testing.T) {
	for _, tc := range []struct {
		code int
		exit int
		want string
	}{
		{messages.ConsoleVMStopped, 0, "VM web stopped"},
		{messages.ConsoleTakenOver, 1, "took the console over"},
		{messages.ConsoleAgentGone, 1, "agent went away"},
	} {
		url, _ := stubConsoleAPI(t, tc.code)
		inR, _ := io.Pipe()
		var out, errOut bytes.Buffer
		code := runIO(context.Background(), []string{"--config", filepath.Join(t.TempDir(), "c"), "--server", url, "vm", "console", "web"}, inR, &out, &errOut)
		// The console is raw by design: the guest's bytes arrive unchanged.
		if code != tc.exit || !strings.Contains(errOut.String(), tc.want) || out.String() != "\x1b]0;pwned\x07boot done\r\n" {
			t.Errorf("close %d: exit %d, stdout %q, stderr %q", tc.code, code, out.String(), errOut.String())
		}
	}
}

// TestLogsFollow: logs -f attaches read-only and prints the replay and live
// output until the VM stops, then exits 0.
func TestLogsFollow(t *testing.T) {
	url, modes := stubConsoleAPI(t, messages.ConsoleVMStopped)
	var out, errOut bytes.Buffer
	code := runIO(context.Background(), []string{"--config", filepath.Join(t.TempDir(), "c"), "--server", url, "vm", "logs", "web", "-f"}, strings.NewReader(""), &out, &errOut)
	// A title sequence split across two frames is still removed.
	if code != 0 || out.String() != "boot done\n" || <-modes != messages.ConsoleReadOnly {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	url, modes = stubConsoleAPI(t, messages.ConsoleVMStopped)
	out.Reset()
	code = runIO(context.Background(), []string{"--config", filepath.Join(t.TempDir(), "c"), "--server", url, "vm", "logs", "web", "-f", "--raw"}, strings.NewReader(""), &out, &errOut)
	if code != 0 || out.String() != "\x1b]0;pwned\x07boot done\r\n" || <-modes != messages.ConsoleReadOnly {
		t.Fatalf("--raw: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	code = runIO(context.Background(), []string{"--config", filepath.Join(t.TempDir(), "c"), "--server", url, "vm", "logs", "web", "-f", "--tail", "5"}, strings.NewReader(""), &out, &errOut)
	if code != 2 {
		t.Fatalf("-f --tail: exit %d", code)
	}
}
