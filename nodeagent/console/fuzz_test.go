package console

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// FuzzHubOutput streams what a guest prints on its serial line, in chunks
// the fuzzer chooses, through a hub to an attached reader and into the
// serial log: the reader gets exactly the bytes, in order, in frames no
// larger than ConsoleMaxFrame; the log's tail is the end of the stream; and
// when the line ends the session closes as "VM stopped".
func FuzzHubOutput(f *testing.F) {
	f.Add([]byte("\x1b]52;c;ZXZpbA==\x07OTHERIX-GUEST-READY instance-id=x\r\nlogin: "), uint16(5))
	f.Add(bytes.Repeat([]byte{0xff, 0x00, '\n'}, 3000), uint16(4096))
	f.Add([]byte{}, uint16(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint16) {
		// A stream above the session's queue lets a reader that a loaded
		// machine slows down be cut as too slow (4002), by design and by
		// timing; the properties here are about the bytes, so stay under it.
		if chunk == 0 || len(stream)/int(chunk) > 512 || len(stream) > DefaultQueueBytes {
			return
		}
		log, err := qemu.OpenSerialLog(filepath.Join(t.TempDir(), "serial.log"), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		agent, guest := net.Pipe()
		h := New(agent, log, Options{})
		s, err := h.Attach(messages.ConsoleReadOnly, false)
		if err != nil {
			t.Fatal(err)
		}
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			for p := stream; len(p) > 0; {
				n := min(int(chunk), len(p))
				if _, err := guest.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
			guest.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var got []byte
		var closed *ClosedError
		for {
			b, err := s.Next(ctx)
			if err != nil {
				if !errors.As(err, &closed) {
					t.Fatalf("Next: %v", err)
				}
				break
			}
			if len(b) == 0 || len(b) > messages.ConsoleMaxFrame {
				t.Fatalf("frame of %d bytes", len(b))
			}
			got = append(got, b...)
		}
		<-wrote
		<-h.Done()
		if closed.Code != messages.ConsoleVMStopped {
			t.Fatalf("session closed with %d (%s), want VM stopped", closed.Code, closed.Reason)
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("reader got %d bytes, the guest wrote %d", len(got), len(stream))
		}
		tail, err := log.Tail(int64(len(stream)))
		if err != nil || !bytes.Equal(tail, stream) {
			t.Fatalf("log tail %d bytes (%v), want the %d written", len(tail), err, len(stream))
		}
	})
}
