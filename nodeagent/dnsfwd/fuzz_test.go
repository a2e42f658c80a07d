package dnsfwd

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsQuery builds a query as a guest's stub resolver sends it.
func dnsQuery(id uint16, name string, typ dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	out, _ := b.Finish()
	return out
}

// FuzzQuery: whatever a guest sends to the anycast DNS address, the
// forwarder relays only queries (never responses: a reflection path), and
// the SERVFAIL it answers with when no upstream does is a well-formed
// 12-byte response carrying the query's id, opcode and RD bit.
func FuzzQuery(f *testing.F) {
	f.Add(dnsQuery(0x1234, "deb.debian.org.", dnsmessage.TypeA))
	f.Add(dnsQuery(1, "example.com.", dnsmessage.TypeAAAA))
	resp := dnsQuery(7, "x.", dnsmessage.TypeTXT)
	resp[2] |= 0x80
	f.Add(resp)
	f.Add([]byte{0, 0, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, q []byte) {
		if !isQuery(q) {
			if len(q) >= headerLen && q[2]&0x80 == 0 {
				t.Fatal("a query was refused")
			}
			return
		}
		if q[2]&0x80 != 0 {
			t.Fatal("a response was taken for a query")
		}
		orig := bytes.Clone(q)
		r := servfail(q)
		if !bytes.Equal(q, orig) {
			t.Fatal("servfail modified the query")
		}
		var p dnsmessage.Parser
		h, err := p.Start(r)
		if err != nil {
			t.Fatalf("servfail does not parse: %v", err)
		}
		if len(r) != headerLen || !h.Response || h.RCode != dnsmessage.RCodeServerFailure || h.ID != binary.BigEndian.Uint16(q) ||
			h.RecursionDesired != (q[2]&1 != 0) || r[2]&0x78 != q[2]&0x78 || h.Authoritative || h.Truncated {
			t.Fatalf("servfail %x for query header %x: %+v", r, q[:headerLen], h)
		}
		if _, err := p.Question(); err != dnsmessage.ErrSectionDone {
			t.Fatalf("servfail has a question section: %v", err)
		}
	})
}

// FuzzTCPFraming: a guest's DNS-over-TCP stream is split into messages
// exactly as framed, never larger than the framing allows, never shorter
// than a header, and writeMsg frames them back byte for byte.
func FuzzTCPFraming(f *testing.F) {
	frame := func(msgs ...[]byte) []byte {
		var b bytes.Buffer
		for _, m := range msgs {
			_ = writeMsg(&b, m)
		}
		return b.Bytes()
	}
	f.Add(frame(dnsQuery(1, "a.example.", dnsmessage.TypeA), dnsQuery(2, "b.example.", dnsmessage.TypeMX)))
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 5, 1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		var again bytes.Buffer
		for {
			msg, err := readMsg(r)
			if err != nil {
				break
			}
			if len(msg) < headerLen || len(msg) > maxMsg {
				t.Fatalf("message of %d bytes", len(msg))
			}
			if err := writeMsg(&again, msg); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.HasPrefix(stream, again.Bytes()) {
			t.Fatal("re-framed messages differ from the stream")
		}
	})
}
