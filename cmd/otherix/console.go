package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// escapeByte detaches from a console: Ctrl+], as telnet and virsh do.
const escapeByte = 0x1d

// vmConsoleCommand is "vm console NAME [--readonly] [--force]".
func (a *app) vmConsoleCommand() *cobra.Command {
	var readonly, force bool
	cmd := &cobra.Command{
		Use:   "console NAME|ID",
		Short: "Attach to a VM's serial console",
		Long: `Attach the terminal to a running VM's serial console. The terminal is put in
raw mode (every key goes to the guest, Ctrl+C included) and restored on exit;
Ctrl+] detaches. One interactive session per VM: --force takes it over from
the current one, --readonly watches without typing. When stdin is not a
terminal it is copied as is (Ctrl+] in it still detaches; its end detaches).

The console is raw by design: what the guest writes reaches your terminal
unchanged, escape sequences included, as with ssh or a serial line, so a
hostile guest can set your terminal's title, move the cursor or, where the
terminal allows it, write to the clipboard (OSC 52). Attach only to guests
you would ssh into, or read their output with "otherix vm logs", which
removes escape sequences unless --raw.

Exits 0 when you detach or the VM stops, 1 when the session is refused or
cut (taken over, node agent gone, too slow).`,
		Example: `  otherix vm console web-1
  otherix vm console web-1 --readonly`,
		Args: exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if readonly && force {
				return usageError(errors.New("--force takes over the interactive session; it does not go with --readonly"))
			}
			mode := messages.ConsoleInteractive
			if readonly {
				mode = messages.ConsoleReadOnly
			}
			return a.console(cmd.Context(), args[0], messages.ConsoleTokenRequest{Mode: mode, Force: force}, true, a.stdout)
		},
	}
	cmd.Flags().BoolVar(&readonly, "readonly", false, "watch the console without typing")
	cmd.Flags().BoolVar(&force, "force", false, "take the interactive session over from whoever holds it")
	return cmd
}

// console attaches to VM ref's console until the user detaches (interactive
// only), the session ends or a signal comes.
// The guest's bytes go to out unchanged: the console is a terminal session.
func (a *app) console(ctx context.Context, ref string, req messages.ConsoleTokenRequest, interactive bool, out io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	var conn *websocket.Conn
	err := a.call(ctx, func(ctx context.Context, c *client.Client) error {
		tok, err := c.ConsoleToken(ctx, ref, req)
		if err != nil {
			return err
		}
		conn, err = c.DialConsole(ctx, tok)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	s := &consoleSession{conn: conn}

	var in *os.File
	if f, ok := a.stdin.(*os.File); ok && interactive && term.IsTerminal(int(f.Fd())) {
		in = f
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("raw terminal: %w", err)
		}
		// Restored on every way out: return, error or signal (which
		// cancels ctx and so returns through here).
		defer term.Restore(int(f.Fd()), old)
	}
	nl := "\n"
	if in != nil {
		nl = "\r\n" // raw mode does not turn \n into \r\n
	}
	if interactive {
		fmt.Fprintf(a.stderr, "Connected to %s (escape: Ctrl+])%s", ref, nl)
	}
	if in != nil {
		stopResize := s.followSize(in)
		defer stopResize()
	}

	detach := make(chan struct{})
	if interactive {
		// The reader of stdin cannot be interrupted: it ends with stdin or
		// the process (so it has no owner to wait for it). It only sends on
		// the connection and closes detach. Read-only: only Ctrl+] counts.
		go s.copyInput(a.stdin, detach, req.Mode != messages.ConsoleReadOnly)
	}

	ended := make(chan error, 1)
	go func() { ended <- s.copyOutput(out) }()
	select {
	case <-detach:
		s.close(websocket.CloseNormalClosure, "detached")
		<-ended
		fmt.Fprintf(a.stderr, "%sDetached from %s.%s", nl, ref, nl)
		return nil
	case <-ctx.Done():
		s.close(websocket.CloseNormalClosure, "interrupted")
		<-ended
		fmt.Fprint(a.stderr, nl)
		return nil
	case err := <-ended:
		return a.consoleEnd(ref, err, nl)
	}
}

// consoleEnd explains why the server ended the session.
func (a *app) consoleEnd(ref string, err error, nl string) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return fmt.Errorf("console of %s: connection lost: %w", ref, err)
	}
	switch ce.Code {
	case messages.ConsoleVMStopped:
		fmt.Fprintf(a.stderr, "%sVM %s stopped.%s", nl, ref, nl)
		return nil
	case websocket.CloseNormalClosure:
		fmt.Fprint(a.stderr, nl)
		return nil
	}
	why := map[int]string{
		messages.ConsoleTakenOver:   "another session took the console over (--force)",
		messages.ConsoleTooSlow:     "this terminal did not keep up with the output",
		messages.ConsoleAgentGone:   "the node's agent went away; the VM keeps running, attach again",
		messages.ConsoleInputFlood:  "more input than the serial line takes",
		messages.ConsoleIdleTimeout: "the connection stopped answering",
	}[ce.Code]
	if why == "" {
		why = ce.Text
	}
	return fmt.Errorf("console of %s closed (%d): %s", ref, ce.Code, why)
}

// consoleSession is the client end of one console WebSocket; writes are
// serialised (gorilla allows one writer).
type consoleSession struct {
	conn *websocket.Conn
	wmu  sync.Mutex
}

func (s *consoleSession) send(typ int, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return s.conn.WriteMessage(typ, b)
}

func (s *consoleSession) close(code int, reason string) {
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	// The server answers with its close frame, which ends copyOutput; a
	// deadline bounds the wait for one that never comes.
	_ = s.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
}

// copyOutput writes terminal bytes to w until the session ends, and
// returns why it ended.
func (s *consoleSession) copyOutput(w io.Writer) error {
	for {
		typ, b, err := s.conn.ReadMessage()
		if err != nil {
			return err
		}
		if typ == websocket.BinaryMessage {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		// Text frames are controls (hello): nothing to show.
	}
}

// copyInput sends r's bytes as keystrokes until Ctrl+] or the end of r,
// then closes detach.
func (s *consoleSession) copyInput(r io.Reader, detach chan struct{}, send bool) {
	defer close(detach)
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			i := bytes.IndexByte(chunk, escapeByte)
			if i >= 0 {
				chunk = chunk[:i]
			}
			if len(chunk) > 0 && send {
				if s.send(websocket.BinaryMessage, append([]byte(nil), chunk...)) != nil {
					return
				}
			}
			if i >= 0 {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// followSize sends the terminal's size now and on every SIGWINCH, until the
// returned stop is called.
func (s *consoleSession) followSize(f *os.File) (stop func()) {
	sendSize := func() {
		cols, rows, err := term.GetSize(int(f.Fd()))
		if err != nil {
			return
		}
		b, _ := json.Marshal(messages.ConsoleControl{Type: "resize", Cols: cols, Rows: rows})
		_ = s.send(websocket.TextMessage, b)
	}
	sendSize()
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ch:
				sendSize()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}
