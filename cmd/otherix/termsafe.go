package main

import (
	"io"
	"unicode/utf8"
)

// termSafe is a writer that passes a guest's output on as plain text: a
// guest controls every byte of its serial console, and escape sequences
// reaching the user's terminal can set the window title and the clipboard
// (OSC 0/2/52), redraw or hide what was printed (CSI), or talk to the
// terminal itself (DCS, APC, PM, SOS). It keeps printable UTF-8, newlines
// and tabs; drops every escape sequence whole, 7-bit (ESC …) and 8-bit
// (C1: CSI U+009B, OSC U+009D, DCS U+0090, …) alike; turns \r\n into \n and
// a lone \r (which would let later text hide earlier text) into \n;
// replaces other control characters and invalid UTF-8 with U+FFFD; and
// drops the bidirectional overrides that reorder what is shown. It keeps
// state across writes, so a sequence split between two chunks of a
// followed log is still removed. Flush ends the stream.
type termSafe struct {
	w     io.Writer
	state int
	n     int  // bytes swallowed in the current sequence
	cr    bool // a \r is pending: \n follows or not
	esc   bool // in a string sequence, the last byte was ESC (maybe ST)
	part  []byte
	out   []byte
}

// Parser states.
const (
	tsGround = iota
	tsEsc    // after ESC
	tsEscInt // ESC and intermediates (0x20–0x2F), waiting for the final byte
	tsCSI    // control sequence: parameters and intermediates until 0x40–0x7E
	tsString // OSC, DCS, SOS, PM, APC: until BEL (OSC) or ST
)

// maxSequence bounds what one escape sequence may swallow: an OSC the guest
// never terminates must not hide the rest of the log.
const maxSequence = 4096

func newTermSafe(w io.Writer) *termSafe { return &termSafe{w: w} }

// Write sanitises p; it reports len(p) once the safe text is written.
func (t *termSafe) Write(p []byte) (int, error) {
	t.out = t.out[:0]
	in := p
	if len(t.part) > 0 {
		// A UTF-8 sequence split by the previous write.
		in = append(t.part, p...)
		t.part = nil
	}
	t.feed(in)
	if _, err := t.w.Write(t.out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what a pending \r or truncated UTF-8 sequence stands for.
func (t *termSafe) Flush() error {
	t.out = t.out[:0]
	if len(t.part) > 0 {
		t.part = nil
		t.rune(utf8.RuneError)
	}
	if t.cr {
		t.cr = false
		t.out = append(t.out, '\n')
	}
	if len(t.out) == 0 {
		return nil
	}
	_, err := t.w.Write(t.out)
	return err
}

func (t *termSafe) feed(p []byte) {
	for len(p) > 0 {
		c := p[0]
		if c < utf8.RuneSelf {
			t.byte(c)
			p = p[1:]
			continue
		}
		if !utf8.FullRune(p) {
			t.part = append([]byte(nil), p...)
			return
		}
		r, size := utf8.DecodeRune(p)
		t.rune(r) // RuneError for invalid bytes, one at a time
		p = p[size:]
	}
}

// byte handles one ASCII byte.
func (t *termSafe) byte(c byte) {
	switch t.state {
	case tsGround:
		switch {
		case c == 0x1b:
			t.enter(tsEsc)
		case c == '\r':
			t.flushCR()
			t.cr = true
		case c == '\n':
			t.cr = false
			t.out = append(t.out, '\n')
		case c == '\t' || (c >= 0x20 && c < 0x7f):
			t.flushCR()
			t.out = append(t.out, c)
		default: // other C0 controls and DEL
			t.flushCR()
			t.out = utf8.AppendRune(t.out, utf8.RuneError)
		}
	case tsEsc:
		switch {
		case c == '[':
			t.enter(tsCSI)
		case c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_':
			t.enter(tsString)
		case c == 0x1b:
			t.enter(tsEsc)
		case c >= 0x20 && c <= 0x2f:
			t.enter(tsEscInt)
		case c == 0x18 || c == 0x1a: // CAN, SUB abort
			t.state = tsGround
		case c < 0x20:
			t.count() // C0 inside a sequence is executed by terminals; drop it
		default: // final byte of a two-byte sequence (ESC c, ESC 7, …)
			t.state = tsGround
		}
	case tsEscInt:
		switch {
		case c >= 0x20 && c <= 0x2f, c < 0x20 && c != 0x18 && c != 0x1a && c != 0x1b:
			t.count()
		case c == 0x1b:
			t.enter(tsEsc)
		default:
			t.state = tsGround
		}
	case tsCSI:
		switch {
		case c >= 0x40 && c <= 0x7e, c == 0x18 || c == 0x1a:
			t.state = tsGround
		case c == 0x1b:
			t.enter(tsEsc)
		default:
			t.count()
		}
	case tsString:
		switch {
		case c == 0x07 || c == 0x18 || c == 0x1a: // BEL ends an OSC; CAN/SUB abort
			t.state = tsGround
		case c == '\\' && t.esc: // ST
			t.state = tsGround
		default:
			t.count()
		}
		t.esc = c == 0x1b
	}
}

// rune handles one non-ASCII rune (or RuneError for an invalid byte).
func (t *termSafe) rune(r rune) {
	if r >= 0x80 && r <= 0x9f {
		// C1 controls: the 8-bit forms of ESC [, ESC ], ESC P, … start
		// the same sequences; ST (U+009C) ends a string.
		switch r {
		case 0x9b:
			t.enter(tsCSI)
		case 0x9d, 0x90, 0x98, 0x9e, 0x9f:
			t.enter(tsString)
		case 0x9c:
			if t.state == tsString {
				t.state = tsGround
			}
		}
		return
	}
	if t.state != tsGround {
		if t.state == tsString {
			t.esc = false
		}
		t.count()
		return
	}
	t.flushCR()
	switch {
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi embeddings, overrides, isolates
	default:
		t.out = utf8.AppendRune(t.out, r)
	}
}

func (t *termSafe) enter(state int) {
	t.state, t.n, t.esc = state, 0, false
}

// count swallows one byte of a sequence; past maxSequence the sequence is
// abandoned and what follows is shown as text.
func (t *termSafe) count() {
	t.n++
	if t.n > maxSequence {
		t.state = tsGround
	}
}

// flushCR writes a pending lone \r as a newline.
func (t *termSafe) flushCR() {
	if t.cr {
		t.cr = false
		t.out = append(t.out, '\n')
	}
}
