package wgtun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// refChecksum is the RFC 1071 sum, a byte pair at a time: the reference
// the fast sum is checked against.
func refChecksum(parts ...[]byte) uint16 {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	var acc uint32
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

func pseudo(ip []byte, proto byte, length int) []byte {
	p := make([]byte, 12)
	copy(p, ip[12:20])
	p[9] = proto
	binary.BigEndian.PutUint16(p[10:], uint16(length))
	return p
}

func TestSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		if got, want := fold(sum(b, 0)), refChecksum(b); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("len %d: fold(sum) %#04x, reference %#04x", n, got, want)
		}
	}
}

// ipv4 builds an IPv4 header for proto with total length total.
func ipv4(proto byte, total int, id uint16, src, dst [4]byte) []byte {
	h := make([]byte, 20)
	h[0], h[1], h[8], h[9] = 0x45, 0x10, 64, proto
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint16(h[4:], id)
	h[6] = 0x40 // DF
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	ipv4HeaderChecksum(h)
	return h
}

// tcpSuper is a TCP/IPv4 super-packet carrying payload, its checksum field
// holding the pseudo-header sum as the kernel leaves it.
func tcpSuper(payload []byte, seq uint32, flags byte) []byte {
	tcp := make([]byte, 32) // 12 bytes of options
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 8 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 502)
	tcp[20], tcp[21], tcp[22] = 1, 1, 8 // NOP NOP timestamps
	ip := ipv4(6, 20+len(tcp)+len(payload), 77, [4]byte{10, 61, 0, 2}, [4]byte{10, 61, 0, 3})
	binary.BigEndian.PutUint16(tcp[16:], fold(pseudoSum(ip, 6, len(tcp)+len(payload))))
	return append(append(ip, tcp...), payload...)
}

// vxlanAround wraps an inner IPv4 packet in outer IPv4/UDP/VXLAN/Ethernet.
func vxlanAround(inner []byte, withCsum bool) []byte {
	eth := []byte{2, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 2, 0x08, 0x00}
	vx := []byte{0x08, 0, 0, 0, 0, 0, 201, 0}
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 51234)
	binary.BigEndian.PutUint16(udp[2:], 4789)
	ulen := 8 + len(vx) + len(eth) + len(inner)
	binary.BigEndian.PutUint16(udp[4:], uint16(ulen))
	outer := ipv4(17, 20+ulen, 900, [4]byte{10, 98, 0, 1}, [4]byte{10, 98, 0, 2})
	if withCsum {
		binary.BigEndian.PutUint16(udp[6:], fold(pseudoSum(outer, 17, ulen)))
	}
	out := append(append(append(outer, udp...), vx...), eth...)
	return append(out, inner...)
}

func bufsFor(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 16+65535)
	}
	return bufs, make([]int, n)
}

// checkTCPSegments checks n segments of a split of payload at mss: IPv4
// and TCP checksums valid, lengths, ids and sequence numbers stepping,
// FIN/PSH on the last only, and the payloads concatenating to payload.
func checkTCPSegments(t *testing.T, segs [][]byte, ipOff int, payload []byte, mss int, seq uint32, flags byte) {
	t.Helper()
	var got []byte
	for i, s := range segs {
		ip := s[ipOff:]
		if c := refChecksum(ip[:20]); c != 0xffff {
			t.Fatalf("segment %d: ip checksum does not verify (%#04x)", i, c)
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
			t.Fatalf("segment %d: ip total length %d, segment %d", i, binary.BigEndian.Uint16(ip[2:]), len(ip))
		}
		if id := binary.BigEndian.Uint16(ip[4:]); id != 77+uint16(i) {
			t.Fatalf("segment %d: ip id %d", i, id)
		}
		tcp := ip[20:]
		if c := refChecksum(pseudo(ip, 6, len(tcp)), tcp); c != 0xffff {
			t.Fatalf("segment %d: tcp checksum does not verify (%#04x)", i, c)
		}
		if s := binary.BigEndian.Uint32(tcp[4:]); s != seq+uint32(i*mss) {
			t.Fatalf("segment %d: seq %d, want %d", i, s, seq+uint32(i*mss))
		}
		want := flags
		if i != len(segs)-1 {
			want &^= 0x09 // FIN and PSH
		}
		if tcp[13] != want {
			t.Fatalf("segment %d of %d: flags %#x, want %#x", i, len(segs), tcp[13], want)
		}
		if i < len(segs)-1 && len(tcp)-32 != mss {
			t.Fatalf("segment %d carries %d bytes, mss %d", i, len(tcp)-32, mss)
		}
		got = append(got, tcp[32:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("payloads do not reassemble: %d bytes, want %d", len(got), len(payload))
	}
}

func randomPayload(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func TestSplitTCP(t *testing.T) {
	payload := randomPayload(5000)
	pkt := tcpSuper(payload, 1000, 0x18|0x01) // PSH ACK FIN
	bufs, sizes := bufsFor(8)
	h := vnetHdr{flags: flagNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1348, csumStart: 20, csumOffset: 16}
	n, err := split(h, pkt, bufs, sizes, 16)
	if err != nil || n != 4 {
		t.Fatalf("split = %d, %v; want 4 segments", n, err)
	}
	segs := make([][]byte, n)
	for i := range n {
		segs[i] = bufs[i][16 : 16+sizes[i]]
	}
	checkTCPSegments(t, segs, 0, payload, 1348, 1000, 0x19)
}

func TestSplitVXLANTunnel(t *testing.T) {
	for _, withCsum := range []bool{false, true} {
		payload := randomPayload(64000)
		inner := tcpSuper(payload, 7, 0x10)
		pkt := vxlanAround(inner, withCsum)
		h := vnetHdr{flags: flagNeedsCsum, gsoType: gsoTunnelV4 | gsoTCPv4, gsoSize: 1298, csumStart: 70, csumOffset: 16, outerTh: 20, innerNh: 50}
		if withCsum {
			h.flags |= flagUDPTunnelCsum
		}
		bufs, sizes := bufsFor(64)
		n, err := split(h, pkt, bufs, sizes, 16)
		if err != nil || n != (64000+1297)/1298 {
			t.Fatalf("csum %v: split = %d, %v", withCsum, n, err)
		}
		segs := make([][]byte, n)
		for i := range n {
			s := bufs[i][16 : 16+sizes[i]]
			segs[i] = s
			if int(binary.BigEndian.Uint16(s[2:])) != len(s) || refChecksum(s[:20]) != 0xffff {
				t.Fatalf("segment %d: outer ip header wrong", i)
			}
			if binary.BigEndian.Uint16(s[4:]) != 900+uint16(i) {
				t.Fatalf("segment %d: outer id %d", i, binary.BigEndian.Uint16(s[4:]))
			}
			udp := s[20:]
			if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
				t.Fatalf("segment %d: udp length %d of %d", i, binary.BigEndian.Uint16(udp[4:]), len(udp))
			}
			c := binary.BigEndian.Uint16(udp[6:])
			if withCsum && refChecksum(pseudo(s, 17, len(udp)), udp) != 0xffff {
				t.Fatalf("segment %d: outer udp checksum does not verify", i)
			}
			if !withCsum && c != 0 {
				t.Fatalf("segment %d: outer udp checksum %#04x, want none", i, c)
			}
			if !bytes.Equal(s[28:50], pkt[28:50]) {
				t.Fatalf("segment %d: vxlan or ethernet header changed", i)
			}
		}
		checkTCPSegments(t, segs, 50, payload, 1298, 7, 0x10)
	}
}

func TestSplitCompletesPartialChecksum(t *testing.T) {
	udp := make([]byte, 8+333)
	copy(udp[8:], randomPayload(333))
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	ip := ipv4(17, 20+len(udp), 1, [4]byte{10, 98, 0, 1}, [4]byte{10, 98, 0, 2})
	binary.BigEndian.PutUint16(udp[6:], fold(pseudoSum(ip, 17, len(udp))))
	pkt := append(ip, udp...)
	bufs, sizes := bufsFor(1)
	n, err := split(vnetHdr{flags: flagNeedsCsum, csumStart: 20, csumOffset: 6}, pkt, bufs, sizes, 16)
	if err != nil || n != 1 {
		t.Fatalf("split = %d, %v", n, err)
	}
	out := bufs[0][16 : 16+sizes[0]]
	if refChecksum(pseudo(out, 17, len(udp)), out[20:]) != 0xffff {
		t.Fatal("completed udp checksum does not verify")
	}
}

func TestSplitRefuses(t *testing.T) {
	pkt := vxlanAround(tcpSuper(randomPayload(3000), 1, 0x10), false)
	bufs, sizes := bufsFor(2)
	h := vnetHdr{flags: flagNeedsCsum, gsoType: gsoTunnelV4 | gsoTCPv4, gsoSize: 1000, csumStart: 70, csumOffset: 16, outerTh: 20, innerNh: 50}
	if _, err := split(h, pkt, bufs, sizes, 16); !errors.Is(err, errTooManySegments) {
		t.Errorf("3 segments into 2 buffers: %v", err)
	}
	bufs, sizes = bufsFor(8)
	for name, bad := range map[string]vnetHdr{
		"ecn":           {gsoType: gsoTCPv4 | gsoECN, gsoSize: 1000, csumStart: 20, csumOffset: 16},
		"ipv6 tunnel":   {gsoType: gsoTunnelV6 | gsoTCPv4, gsoSize: 1000, csumStart: 70, csumOffset: 16, outerTh: 20, innerNh: 50},
		"inner udp":     {gsoType: gsoTunnelV4 | gsoUDPL4, gsoSize: 1000, csumStart: 70, csumOffset: 6, outerTh: 20, innerNh: 50},
		"odd offsets":   {gsoType: gsoTunnelV4 | gsoTCPv4, gsoSize: 1000, csumStart: 70, csumOffset: 16, outerTh: 24, innerNh: 50},
		"tcp not there": {gsoType: gsoTunnelV4 | gsoTCPv4, gsoSize: 1000, csumStart: 60, csumOffset: 16, outerTh: 20, innerNh: 50},
		"zero mss":      {gsoType: gsoTunnelV4 | gsoTCPv4, csumStart: 70, csumOffset: 16, outerTh: 20, innerNh: 50},
		"csum past end": {flags: flagNeedsCsum, csumStart: 20, csumOffset: 9000},
	} {
		if _, err := split(bad, pkt, bufs, sizes, 16); !errors.Is(err, errMalformed) {
			t.Errorf("%s: %v, want errMalformed", name, err)
		}
	}
	h.gsoSize = 1400
	if _, err := split(h, pkt[:len(pkt)-100], bufs, sizes, 16); !errors.Is(err, errMalformed) {
		t.Errorf("a truncated super-packet: %v, want errMalformed", err)
	}
}

func BenchmarkSplitVXLAN(b *testing.B) {
	pkt := vxlanAround(tcpSuper(randomPayload(64000), 7, 0x10), false)
	h := vnetHdr{flags: flagNeedsCsum, gsoType: gsoTunnelV4 | gsoTCPv4, gsoSize: 1298, csumStart: 70, csumOffset: 16, outerTh: 20, innerNh: 50}
	bufs, sizes := bufsFor(64)
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, err := split(h, pkt, bufs, sizes, 16); err != nil {
			b.Fatal(err)
		}
	}
}
