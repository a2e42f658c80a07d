package wgtun

import (
	"bytes"
	"encoding/binary"
)

// maxCoalesce bounds the datagrams one UDP GSO write carries, and
// maxCoalescedLen its size (an IPv4 total length).
const (
	maxCoalesce     = 64
	maxCoalescedLen = 65535
)

// run is a stretch of bufs written with one system call: one packet, or
// consecutive UDP/IPv4 datagrams of one flow (VXLAN from one peer) with
// equal payload sizes but perhaps a shorter last one, written as one UDP
// GSO super-packet that the kernel splits back.
type run struct {
	first, n int
	segSize  int // payload bytes per datagram; 0 for a single packet
	total    int // IPv4 total length of the super-packet
}

// udpv4Payload returns the UDP payload size of an unfragmented UDP/IPv4
// packet without IP options, or -1.
func udpv4Payload(p []byte) int {
	if len(p) < 28 || p[0] != 0x45 || p[9] != 17 {
		return -1
	}
	if binary.BigEndian.Uint16(p[6:])&0x3fff != 0 { // MF or a fragment offset
		return -1
	}
	if int(binary.BigEndian.Uint16(p[2:])) != len(p) || int(binary.BigEndian.Uint16(p[24:])) != len(p)-20 {
		return -1
	}
	return len(p) - 28
}

// sameFlow: equal addresses and ports, TOS, DF and TTL, so the kernel's
// split of the super-packet gives back these very headers.
func sameFlow(a, b []byte) bool {
	return a[1] == b[1] && a[6]&0x40 == b[6]&0x40 && a[8] == b[8] &&
		bytes.Equal(a[12:24], b[12:24])
}

// plan groups the packets of bufs (each at offset) into runs, in order.
func plan(bufs [][]byte, offset int, runs []run) []run {
	runs = runs[:0]
	for i := 0; i < len(bufs); {
		p := bufs[i][offset:]
		seg := udpv4Payload(p)
		r := run{first: i, n: 1}
		if seg > 0 {
			total := len(p)
			j := i + 1
			for ; j < len(bufs) && j-i < maxCoalesce; j++ {
				q := bufs[j][offset:]
				qs := udpv4Payload(q)
				if qs <= 0 || qs > seg || !sameFlow(p, q) || total+qs > maxCoalescedLen {
					break
				}
				total += qs
				if qs < seg {
					j++ // a shorter datagram ends the run
					break
				}
			}
			if j-i > 1 {
				r = run{first: i, n: j - i, segSize: seg, total: total}
			}
		}
		runs = append(runs, r)
		i += r.n
	}
	return runs
}

// coalescedHeader turns the first datagram's headers (first, 28 bytes) into
// those of the super-packet r, and writes the virtio header for it to h: a
// UDP GSO packet whose checksum the kernel completes per datagram (the field
// holds the pseudo-header sum for the whole length, as for any partial
// checksum).
func coalescedHeader(r run, first []byte, h []byte) {
	clear(h[:hdrLen])
	h[0] = flagNeedsCsum
	h[1] = gsoUDPL4
	binary.LittleEndian.PutUint16(h[2:], 28)
	binary.LittleEndian.PutUint16(h[4:], uint16(r.segSize))
	binary.LittleEndian.PutUint16(h[6:], 20)
	binary.LittleEndian.PutUint16(h[8:], 6)
	binary.BigEndian.PutUint16(first[2:], uint16(r.total))
	ipv4HeaderChecksum(first[:20])
	udpLen := r.total - 20
	binary.BigEndian.PutUint16(first[24:], uint16(udpLen))
	binary.BigEndian.PutUint16(first[26:], fold(pseudoSum(first, 17, udpLen)))
}
