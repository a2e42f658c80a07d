package console

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// These tests run a hub over a real unix socket whose listening end the test
// owns, standing in for QEMU's serial chardev socket.

type rig struct {
	hub  *Hub
	qemu net.Conn // the test's end: what QEMU would read and write
	log  *qemu.SerialLog
}

func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	dir, err := os.MkdirTemp("", "con") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "serial.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	l, err := qemu.OpenSerialLog(filepath.Join(dir, "serial.log"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Dial(sock, l, opts)
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		h.Close(messages.ConsoleAgentGone, "test over")
		peer.Close()
		l.Close()
	})
	return &rig{hub: h, qemu: peer, log: l}
}

func attach(t *testing.T, h *Hub, mode string, force bool) *Session {
	t.Helper()
	s, err := h.Attach(mode, force)
	if err != nil {
		t.Fatalf("attach %s: %v", mode, err)
	}
	return s
}

// readUntil collects a session's output until it contains want.
func readUntil(t *testing.T, s *Session, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []byte
	for !bytes.Contains(got, []byte(want)) {
		b, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %q, got %q: %v", want, got, err)
		}
		got = append(got, b...)
	}
	return string(got)
}

// waitClosed waits for s to close and checks its code.
func waitClosed(t *testing.T, s *Session, code int) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("session not closed, want code %d", code)
	}
	if err := s.Err(); err == nil || err.Code != code {
		t.Fatalf("closed with %v, want code %d", err, code)
	}
}

func TestOutputReachesReadersAndLog(t *testing.T) {
	r := newRig(t, Options{})
	a := attach(t, r.hub, messages.ConsoleReadOnly, false)
	b := attach(t, r.hub, messages.ConsoleReadOnly, false)
	if _, err := r.qemu.Write([]byte("booting...\nlogin: ")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, a, "login: ")
	readUntil(t, b, "login: ")
	tail, err := r.log.Tail(100)
	if err != nil || string(tail) != "booting...\nlogin: " {
		t.Fatalf("log: %q %v", tail, err)
	}
	// A later session gets the log's tail first, then live output.
	c := attach(t, r.hub, messages.ConsoleReadOnly, false)
	if _, err := r.qemu.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	if got := readUntil(t, c, "root\n"); got != "booting...\nlogin: root\n" {
		t.Fatalf("replay then live: %q", got)
	}
}

func TestInteractiveInputReachesTheSerialLine(t *testing.T) {
	r := newRig(t, Options{})
	s := attach(t, r.hub, messages.ConsoleInteractive, false)
	if err := s.Write([]byte("echo hi\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	_ = r.qemu.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r.qemu, buf); err != nil || string(buf) != "echo hi\n" {
		t.Fatalf("serial line got %q %v", buf, err)
	}
	ro := attach(t, r.hub, messages.ConsoleReadOnly, false)
	if err := ro.Write([]byte("x")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only write: %v", err)
	}
	if _, err := r.hub.Attach("admin", false); !errors.Is(err, ErrMode) {
		t.Fatalf("bad mode: %v", err)
	}
}

func TestOneWriterAndForcedTakeover(t *testing.T) {
	r := newRig(t, Options{})
	first := attach(t, r.hub, messages.ConsoleInteractive, false)
	if _, err := r.hub.Attach(messages.ConsoleInteractive, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("second interactive: %v, want ErrBusy", err)
	}
	ro := attach(t, r.hub, messages.ConsoleReadOnly, false) // readers are never refused
	second := attach(t, r.hub, messages.ConsoleInteractive, true)
	waitClosed(t, first, messages.ConsoleTakenOver)
	if err := first.Write([]byte("x")); err == nil {
		t.Fatal("the displaced writer can still type")
	}
	if err := second.Write([]byte("y")); err != nil {
		t.Fatalf("new writer: %v", err)
	}
	buf := make([]byte, 1)
	_ = r.qemu.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r.qemu, buf); err != nil || string(buf) != "y" {
		t.Fatalf("serial line got %q %v", buf, err)
	}
	if ro.Err() != nil {
		t.Fatalf("the reader was closed by the takeover: %v", ro.Err())
	}
}

func TestVanishedWriterFreesTheSlot(t *testing.T) {
	r := newRig(t, Options{})
	s := attach(t, r.hub, messages.ConsoleInteractive, false)
	s.Close(1001, "client went away") // what the WebSocket bridge does
	again := attach(t, r.hub, messages.ConsoleInteractive, false)
	if err := again.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if n := r.hub.Sessions(); n != 1 {
		t.Fatalf("%d sessions attached, want 1", n)
	}
}

func TestSlowReaderIsDroppedAndMemoryStaysBounded(t *testing.T) {
	const bound = 64 << 10
	r := newRig(t, Options{QueueBytes: bound})
	slow := attach(t, r.hub, messages.ConsoleReadOnly, false) // never reads
	fast := attach(t, r.hub, messages.ConsoleReadOnly, false)
	got := make(chan int, 1)
	go func() {
		n := 0
		for {
			b, err := fast.Next(context.Background())
			if err != nil {
				return
			}
			n += len(b)
			got <- n
		}
	}()
	// 1 MiB in 16 KiB chunks; each chunk is written once the fast reader has
	// taken the one before, so only the slow one falls behind.
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	total := 0
	for i := 0; i < 64; i++ {
		if _, err := r.qemu.Write(chunk); err != nil {
			t.Fatal(err)
		}
		total += len(chunk)
		deadline := time.After(10 * time.Second)
		for n := 0; n < total; {
			select {
			case n = <-got:
			case <-deadline:
				t.Fatalf("fast reader stuck at %d of %d bytes", n, total)
			}
		}
	}
	waitClosed(t, slow, messages.ConsoleTooSlow)
	slow.mu.Lock()
	peak, left := slow.peak, len(slow.pending)
	slow.mu.Unlock()
	if peak > hardQueueFactor*bound || left != 0 {
		t.Fatalf("slow session queued up to %d bytes (hard bound %d), %d left after close", peak, hardQueueFactor*bound, left)
	}
	if fast.Err() != nil {
		t.Fatalf("the fast reader was closed: %v", fast.Err())
	}
	if n := r.hub.Sessions(); n != 1 {
		t.Fatalf("%d sessions attached, want only the fast one", n)
	}
}

func TestSerialEOFClosesSessionsWithVMStopped(t *testing.T) {
	r := newRig(t, Options{})
	w := attach(t, r.hub, messages.ConsoleInteractive, false)
	ro := attach(t, r.hub, messages.ConsoleReadOnly, false)
	if _, err := r.qemu.Write([]byte("Power down.\n")); err != nil {
		t.Fatal(err)
	}
	r.qemu.Close() // QEMU exited
	waitClosed(t, w, messages.ConsoleVMStopped)
	waitClosed(t, ro, messages.ConsoleVMStopped)
	// What the guest printed last is still delivered before the close.
	if got := readUntil(t, ro, "Power down.\n"); !strings.HasSuffix(got, "Power down.\n") {
		t.Fatalf("last output: %q", got)
	}
	if _, err := ro.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after the queue: %v", err)
	}
	select {
	case <-r.hub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hub not done after EOF")
	}
	if _, err := r.hub.Attach(messages.ConsoleReadOnly, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("attach after EOF: %v", err)
	}
}

func TestAgentStopClosesSessionsWithAgentGone(t *testing.T) {
	r := newRig(t, Options{})
	s := attach(t, r.hub, messages.ConsoleInteractive, false)
	r.hub.Close(messages.ConsoleAgentGone, "the agent is stopping")
	waitClosed(t, s, messages.ConsoleAgentGone)
	// The serial line is released (QEMU can take the next agent's
	// connection) and QEMU's end sees EOF, nothing else.
	_ = r.qemu.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.qemu.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("QEMU's end: %v, want EOF", err)
	}
}

func TestInputFloodIsClosed(t *testing.T) {
	t.Run("over the rate", func(t *testing.T) {
		now := time.Unix(1000, 0)
		r := newRig(t, Options{InputBytes: 1000, InputWindow: time.Second, Now: func() time.Time { return now }})
		go io.Copy(io.Discard, r.qemu)
		s := attach(t, r.hub, messages.ConsoleInteractive, false)
		if err := s.Write(make([]byte, 600)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(2 * time.Second) // a new window
		if err := s.Write(make([]byte, 600)); err != nil {
			t.Fatalf("second window: %v", err)
		}
		if err := s.Write(make([]byte, 600)); err == nil {
			t.Fatal("1200 bytes in one window accepted")
		}
		waitClosed(t, s, messages.ConsoleInputFlood)
		attach(t, r.hub, messages.ConsoleInteractive, false) // the slot is free
	})
	t.Run("more than the line takes", func(t *testing.T) {
		r := newRig(t, Options{InputBytes: 1 << 30, InputStall: 100 * time.Millisecond})
		s := attach(t, r.hub, messages.ConsoleInteractive, false)
		frame := make([]byte, messages.ConsoleMaxFrame)
		// QEMU (the test) never reads: the socket buffer fills and a write
		// stalls. The buffer is a few hundred KiB; 64 MiB is far past it.
		for i := 0; i < 2048; i++ {
			if err := s.Write(frame); err != nil {
				waitClosed(t, s, messages.ConsoleInputFlood)
				return
			}
		}
		t.Fatal("64 MiB of input into a line nobody reads was accepted")
	})
}

// TestBurstWithinGraceIsKept: a session that falls behind by more than
// QueueBytes survives while it catches up within SlowGrace, and is closed
// when it stays behind longer.
func TestBurstWithinGraceIsKept(t *testing.T) {
	const bound = 16 << 10
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	r := newRig(t, Options{QueueBytes: bound, SlowGrace: time.Second, Now: clock})
	s, err := r.hub.Attach(messages.ConsoleReadOnly, false)
	if err != nil {
		t.Fatal(err)
	}
	queued := func() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.pending) }
	write := func(n int) {
		t.Helper()
		before := queued()
		if _, err := r.qemu.Write(bytes.Repeat([]byte("y"), n)); err != nil {
			t.Fatal(err)
		}
		if !testutil.Until(10*time.Second, time.Millisecond, func() bool { return queued() >= before+n || s.Err() != nil }) {
			t.Fatalf("hub delivered %d of %d bytes", queued()-before, n)
		}
	}
	drain := func() {
		for queued() > 0 {
			if _, err := s.Next(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Twice the soft bound at once: kept, it is a burst.
	write(2 * bound)
	if s.Err() != nil {
		t.Fatalf("closed during a burst within the hard bound: %v", s.Err())
	}
	drain()
	advance(5 * time.Second) // caught up: the grace starts afresh
	write(2 * bound)
	if s.Err() != nil {
		t.Fatalf("closed after catching up: %v", s.Err())
	}
	// Still behind past the grace: closed at the next output.
	advance(2 * time.Second)
	if _, err := r.qemu.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s, messages.ConsoleTooSlow)
}

// TestReplayNeverMixesWithLiveOutput: the replay of the log comes out of
// Next in frames of its own, so the carrier can mark where it ends.
func TestReplayNeverMixesWithLiveOutput(t *testing.T) {
	r := newRig(t, Options{})
	first, err := r.hub.Attach(messages.ConsoleReadOnly, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.qemu.Write([]byte("old boot line\n")); err != nil {
		t.Fatal(err)
	}
	if b, err := first.Next(context.Background()); err != nil || string(b) != "old boot line\n" {
		t.Fatalf("live output: %q %v", b, err)
	}
	s, err := r.hub.Attach(messages.ConsoleReadOnly, false)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Replaying() {
		t.Fatal("a session attached to a log with output does not replay it")
	}
	if _, err := r.qemu.Write([]byte("new\n")); err != nil {
		t.Fatal(err)
	}
	// Wait until the live bytes are queued behind the replay.
	if b, err := first.Next(context.Background()); err != nil || string(b) != "new\n" {
		t.Fatalf("live output: %q %v", b, err)
	}
	b, err := s.Next(context.Background())
	if err != nil || string(b) != "old boot line\n" || s.Replaying() {
		t.Fatalf("first frame %q (replaying %v) %v: want exactly the replay", b, s.Replaying(), err)
	}
	if b, err := s.Next(context.Background()); err != nil || string(b) != "new\n" {
		t.Fatalf("after the replay: %q %v", b, err)
	}
}
