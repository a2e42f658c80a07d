package qemu

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pattern is n bytes in which every offset is distinguishable enough to
// catch a misplaced chunk.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func logSize(t *testing.T, path string) int64 {
	t.Helper()
	var total int64
	for _, p := range []string{path, path + ".1"} {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	return total
}

func TestSerialLogBounded(t *testing.T) {
	const max = 1 << 20
	path := filepath.Join(t.TempDir(), "serial.log")
	l, err := OpenSerialLog(path, max)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	data := pattern(5 << 20)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 7919) // prime: chunks straddle every boundary
		if _, err := l.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
		if sz := logSize(t, path); sz > max {
			t.Fatalf("log is %d bytes, bound %d", sz, max)
		}
	}
	got, err := l.Tail(max / 2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[len(data)-max/2:]) {
		t.Error("Tail(max/2) is not the newest max/2 bytes")
	}
	all, err := l.Tail(10 * max)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < max/2 || len(all) > max || !bytes.Equal(all, data[len(data)-len(all):]) {
		t.Errorf("Tail(all) = %d bytes, not a suffix of the input of size max/2..max", len(all))
	}
	// One write larger than the whole bound keeps its newest part.
	big := pattern(3 * max)
	if _, err := l.Write(big); err != nil {
		t.Fatal(err)
	}
	if sz := logSize(t, path); sz > max {
		t.Fatalf("after a %d-byte write the log is %d bytes", len(big), sz)
	}
	got, _ = l.Tail(max / 2)
	if !bytes.Equal(got, big[len(big)-max/2:]) {
		t.Error("Tail after a huge write is not its newest bytes")
	}
}

func TestSerialLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	l, err := OpenSerialLog(path, 10) // two files of 5 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	in := "0123456789abcdefghijklm"
	for _, piece := range []string{"012", "3456789a", "b", "cdefghijkl", "m"} {
		if _, err := l.Write([]byte(piece)); err != nil {
			t.Fatal(err)
		}
	}
	// Rotation happens at each 5-byte boundary: kept are "fghij" in .1
	// and "klm" current.
	for n := int64(0); n <= 10; n++ {
		got, err := l.Tail(n)
		if err != nil {
			t.Fatal(err)
		}
		want := in[len(in)-int(min(n, 8)):]
		if string(got) != want {
			t.Errorf("Tail(%d) = %q, want %q", n, got, want)
		}
	}
	// A reopened log continues where the last one stopped.
	l.Close()
	l2, err := OpenSerialLog(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	l2.Write([]byte("no"))
	if got, _ := l2.Tail(100); string(got) != "fghijklmno" {
		t.Errorf("after reopen Tail = %q, want %q", got, "fghijklmno")
	}
}

func TestSerialLogPumpAndFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	l, err := OpenSerialLog(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	guest, host := net.Pipe()
	pumped := make(chan error, 1)
	go func() { pumped <- l.Pump(host) }()

	// Follow the way `logs -f` would: Changed, then Since, no sleeping.
	var followed bytes.Buffer
	var off int64
	followDone := make(chan struct{})
	want := ""
	for i := range 100 {
		want += fmt.Sprintf("line %d\n", i)
	}
	go func() {
		defer close(followDone)
		for followed.Len() < len(want) {
			changed := l.Changed()
			b, next, err := l.Since(off)
			if err != nil {
				t.Error(err)
				return
			}
			followed.Write(b)
			off = next
			if len(b) == 0 {
				select {
				case <-changed:
				case <-time.After(10 * time.Second):
					t.Error("no change within 10s")
					return
				}
			}
		}
	}()
	for i := range 100 {
		fmt.Fprintf(guest, "line %d\n", i)
	}
	guest.Close() // QEMU exiting closes the socket
	if err := <-pumped; err != nil {
		t.Fatalf("Pump: %v", err)
	}
	<-followDone
	if followed.String() != want {
		t.Errorf("followed %d bytes, want %d", followed.Len(), len(want))
	}
	if got, _ := l.Tail(int64(len(want))); string(got) != want {
		t.Error("Tail differs from what was pumped")
	}
	// Close wakes followers for good.
	l.Close()
	select {
	case <-l.Changed():
	default:
		t.Error("Changed not closed after Close")
	}
}
