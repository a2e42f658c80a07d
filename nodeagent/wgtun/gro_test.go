package wgtun

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// udpPacket is a UDP/IPv4 datagram of flow sport with n payload bytes, at
// offset 16 of its buffer as wireguard-go hands it over.
func udpPacket(sport uint16, n int) []byte {
	udp := make([]byte, 8+n)
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], 4789)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+n))
	ip := ipv4(17, 28+n, 5, [4]byte{10, 98, 0, 2}, [4]byte{10, 98, 0, 1})
	return append(make([]byte, 16), append(ip, udp...)...)
}

func TestPlanRuns(t *testing.T) {
	tcp := append(make([]byte, 16), tcpSuper(randomPayload(100), 1, 0x10)...)
	frag := udpPacket(1, 1000)
	frag[16+6] |= 0x20 // more fragments
	bufs := [][]byte{
		udpPacket(1, 1000), udpPacket(1, 1000), udpPacket(1, 1000), udpPacket(1, 400), // a run closed by a shorter one
		udpPacket(1, 1000), // alone: a TCP packet follows
		tcp,
		udpPacket(2, 1000), udpPacket(3, 1000), // two flows
		udpPacket(3, 1000), udpPacket(3, 1200), // a larger one does not join
		frag, frag,
	}
	var got []string
	for _, r := range plan(bufs, 16, nil) {
		got = append(got, fmt.Sprintf("%d+%d/%d/%d", r.first, r.n, r.segSize, r.total))
	}
	want := []string{"0+4/1000/3428", "4+1/0/0", "5+1/0/0", "6+1/0/0", "7+2/1000/2028", "9+1/0/0", "10+1/0/0", "11+1/0/0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("runs %v, want %v", got, want)
	}

	var many [][]byte
	for range maxCoalesce + 3 {
		many = append(many, udpPacket(9, 1000))
	}
	runs := plan(many, 16, nil)
	if len(runs) != 2 || runs[0].n != maxCoalesce || runs[1].n != 3 {
		t.Fatalf("a long flow: %+v", runs)
	}
	big := [][]byte{udpPacket(4, 30000), udpPacket(4, 30000), udpPacket(4, 30000)}
	if runs := plan(big, 16, nil); len(runs) != 2 || runs[0].n != 2 || runs[0].total > maxCoalescedLen {
		t.Fatalf("runs above 64 KiB: %+v", runs)
	}
}

func TestCoalescedHeader(t *testing.T) {
	first := udpPacket(1, 1000)[16:]
	r := run{first: 0, n: 3, segSize: 1000, total: 28 + 2500}
	h := make([]byte, hdrLen)
	coalescedHeader(r, first, h)
	d := decodeHdr(h)
	if d.flags != flagNeedsCsum || d.gsoType != gsoUDPL4 || d.gsoSize != 1000 || d.csumStart != 20 || d.csumOffset != 6 {
		t.Fatalf("virtio header %+v", d)
	}
	if binary.BigEndian.Uint16(first[2:]) != 2528 || refChecksum(first[:20]) != 0xffff {
		t.Fatal("ip header of the super-packet")
	}
	if binary.BigEndian.Uint16(first[24:]) != 2508 {
		t.Fatalf("udp length %d", binary.BigEndian.Uint16(first[24:]))
	}
	if got, want := binary.BigEndian.Uint16(first[26:]), refChecksum(pseudo(first, 17, 2508)); got != want {
		t.Fatalf("udp checksum field %#04x, want the pseudo-header sum %#04x", got, want)
	}
}
