package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Seeds are lines as QEMU 7.2 writes them (captured from qemu-system-x86_64
// over QMP while the tests here ran).
var qmpSeeds = []string{
	`{"return": {}}`,
	`{"return": {"status": "running", "singlestep": false, "running": true}, "id": "1"}`,
	`{"timestamp": {"seconds": 1765112345, "microseconds": 123456}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`,
	`{"timestamp": {"seconds": 1765112345, "microseconds": 1}, "event": "POWERDOWN"}`,
	`{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": "2"}`,
	`{"event": "STOP", "data": {"x": [1, 2, {"y": null}]}, "timestamp": {"seconds": -1, "microseconds": 99999999999}}`,
}

// FuzzQMPMessage: any line either fails to decode or decodes to a message
// that survives a round trip, so nothing QEMU sends is half-understood.
func FuzzQMPMessage(f *testing.F) {
	for _, s := range qmpSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		msg, err := decodeMessage(line)
		if err != nil {
			return
		}
		again, err := json.Marshal(msg)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", msg, err)
		}
		back, err := decodeMessage(again)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", again, err)
		}
		if back.ID != msg.ID || back.Event != msg.Event || (back.Error == nil) != (msg.Error == nil) {
			t.Fatalf("round trip changed the message: %+v -> %+v", msg, back)
		}
	})
}

// FuzzQMPStream plays a QEMU that greets, accepts capabilities, answers one
// command and then sends whatever the fuzzer chose: the Monitor must never
// panic, must end (close its event channels) when the stream ends or turns
// into garbage, must keep lines bounded, and must deliver only named events.
func FuzzQMPStream(f *testing.F) {
	for _, s := range qmpSeeds {
		f.Add([]byte(s + "\n"))
	}
	f.Add([]byte(`{"return": {}, "id": "1"}` + "\r\n" + `{"event": "RESET"}` + "\n\n \n"))
	f.Add(bytes.Repeat([]byte("{"), 5000))
	f.Add(append(bytes.Repeat([]byte(" "), maxQMPLine+10), '\n'))
	f.Fuzz(func(t *testing.T, stream []byte) {
		agent, qemu := net.Pipe()
		fake := make(chan struct{})
		go func() {
			defer close(fake)
			defer qemu.Close()
			_, _ = qemu.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
			lr := newLineReader(qemu)
			if _, err := lr.next(); err != nil { // qmp_capabilities
				return
			}
			_, _ = qemu.Write([]byte(`{"return": {}}` + "\n"))
			// Drain what the Monitor sends so its writes never block.
			go func() { _, _ = lr.br.WriteTo(discard{}) }()
			_, _ = qemu.Write(stream)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := dialConn(ctx, agent)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		events := m.Events()
		// A command in flight must be answered or failed, never hang.
		cmdDone := make(chan struct{})
		go func() {
			defer close(cmdDone)
			_, _ = m.Status(ctx)
		}()
		<-fake
		for e := range events {
			if e.Name == "" {
				t.Fatalf("event without a name: %+v", e)
			}
		}
		<-cmdDone
		if ctx.Err() != nil {
			t.Fatal("the monitor did not end with its stream")
		}
		m.Close()
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzSerialLog writes what a guest prints, in chunks the fuzzer chooses,
// through a small log: the files never exceed the bound, Tail always
// equals the end of everything written, and Since resumes exactly.
func FuzzSerialLog(f *testing.F) {
	f.Add([]byte("\x1b[2J\x1b]0;title\x07login: "), uint16(7), uint16(64))
	f.Add(bytes.Repeat([]byte("OTHERIX-GUEST-READY\r\n"), 40), uint16(100), uint16(256))
	f.Add([]byte{0, 1, 2, 0xff, 0xfe}, uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, out []byte, chunk, max uint16) {
		// Keep an execution in milliseconds: every write is file I/O.
		if chunk == 0 || max < 2 || len(out) > 8192 || len(out)/int(chunk) > 256 {
			return
		}
		path := filepath.Join(t.TempDir(), "serial.log")
		l, err := OpenSerialLog(path, int64(max))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		// Since, called after each write as `logs -f` does, resumes where
		// the last call ended, skipping only what rotation dropped: each
		// answer is the end of everything written so far.
		var off, written int64
		for rest := out; len(rest) > 0; {
			n := min(int(chunk), len(rest))
			if _, err := l.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest, written = rest[n:], written+int64(n)
			b, next, err := l.Since(off)
			if err != nil {
				t.Fatal(err)
			}
			if next != written || !bytes.Equal(b, out[written-int64(len(b)):written]) ||
				int64(len(b)) < min(written-off, int64(max/2)) {
				t.Fatalf("Since(%d) after %d bytes = %d bytes, next %d", off, written, len(b), next)
			}
			off = next
		}
		size := func(p string) int64 {
			fi, err := os.Stat(p)
			if err != nil {
				return 0
			}
			return fi.Size()
		}
		if s := size(path) + size(path+".1"); s > int64(max) {
			t.Fatalf("log holds %d bytes, bound %d", s, max)
		}
		keep := min(len(out), int(max/2))
		tail, err := l.Tail(int64(len(out)))
		if err != nil {
			t.Fatal(err)
		}
		if len(tail) < keep || !bytes.HasSuffix(out, tail) {
			t.Fatalf("Tail = %d bytes, not the end of the %d written (keeps >= %d)", len(tail), len(out), keep)
		}
	})
}
