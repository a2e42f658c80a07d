package wgtun

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The virtio-net header the TUN puts before each packet once its header
// size is hdrLen: struct virtio_net_hdr_v1 (12 bytes), the hash fields (8)
// and the UDP tunnel fields (4) of Linux 6.17's
// virtio_net_hdr_v1_hash_tunnel. Little-endian: the TUN is never switched
// to big-endian headers.
const (
	hdrLen = 24

	flagNeedsCsum     = 0x01
	flagUDPTunnelCsum = 0x08 // the outer UDP checksum is wanted too

	gsoNone      = 0x00
	gsoTCPv4     = 0x01
	gsoUDPL4     = 0x05
	gsoTunnelV4  = 0x20 // outer IPv4 UDP tunnel; or-ed with the inner type
	gsoTunnelV6  = 0x40
	gsoECN       = 0x80
	gsoInnerMask = 0x1f
)

// vnetHdr is the decoded header.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
	outerTh    uint16 // offset of the outer UDP header (tunnel GSO)
	innerNh    uint16 // offset of the inner IP header (tunnel GSO)
}

func decodeHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		gsoSize:    binary.LittleEndian.Uint16(b[4:]),
		csumStart:  binary.LittleEndian.Uint16(b[6:]),
		csumOffset: binary.LittleEndian.Uint16(b[8:]),
		outerTh:    binary.LittleEndian.Uint16(b[20:]),
		innerNh:    binary.LittleEndian.Uint16(b[22:]),
	}
}

// errMalformed marks a packet the kernel handed over that split cannot
// take apart; the device drops it (an error would stop wireguard-go).
var errMalformed = errors.New("malformed offload packet")

// errTooManySegments: the super-packet has more segments than buffers.
var errTooManySegments = errors.New("more segments than buffers")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// split turns one packet read from the TUN (pkt, after its header h) into
// the packets wireguard-go encrypts, each at bufs[i][offset:], with its
// length in sizes[i]. It completes a partial checksum, segments a TCP/IPv4
// super-packet, and segments a VXLAN-in-UDP/IPv4 super-packet whose inner
// packet is TCP/IPv4 — what a VXLAN device hands a TUN that accepts UDP
// tunnel GSO. Returns the number of packets.
func split(h vnetHdr, pkt []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if h.gsoType == gsoNone {
		if h.flags&flagNeedsCsum != 0 {
			if err := completeChecksum(pkt, int(h.csumStart), int(h.csumOffset)); err != nil {
				return 0, err
			}
		}
		if len(pkt) > len(bufs[0])-offset {
			return 0, malformed("packet of %d bytes exceeds the buffer", len(pkt))
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, nil
	}
	if h.gsoType&gsoECN != 0 || h.gsoType&gsoTunnelV6 != 0 || h.gsoType&gsoInnerMask != gsoTCPv4 {
		// Never offered by the device's offload flags.
		return 0, malformed("gso type %#x", h.gsoType)
	}
	seg := tcpSegmenter{mss: int(h.gsoSize)}
	if h.gsoType&gsoTunnelV4 != 0 {
		seg.tunnel = true
		seg.outerCsum = h.flags&flagUDPTunnelCsum != 0
		seg.outerTh, seg.innerIP = int(h.outerTh), int(h.innerNh)
		// Outer IPv4 without options, UDP, VXLAN, inner Ethernet.
		if seg.outerTh != 20 || seg.innerIP != seg.outerTh+8+8+14 {
			return 0, malformed("tunnel offsets %d/%d", seg.outerTh, seg.innerIP)
		}
		if len(pkt) < seg.innerIP || pkt[0] != 0x45 || pkt[9] != 17 {
			return 0, malformed("outer header")
		}
	}
	return seg.segment(pkt, int(h.csumStart), bufs, sizes, offset)
}

// completeChecksum finishes a CHECKSUM_PARTIAL packet: the field at
// start+off holds the pseudo-header sum; the checksum covers pkt[start:].
func completeChecksum(pkt []byte, start, off int) error {
	at := start + off
	if start < 0 || at+2 > len(pkt) {
		return malformed("checksum at %d+%d of a %d-byte packet", start, off, len(pkt))
	}
	c := ^fold(sum(pkt[start:], 0))
	if c == 0 && off == 6 {
		c = 0xffff // UDP: zero means "no checksum"
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
	return nil
}

// tcpSegmenter cuts a TCP/IPv4 super-packet, plain or inside VXLAN, into
// segments of mss payload bytes.
type tcpSegmenter struct {
	mss       int
	tunnel    bool
	outerCsum bool
	outerTh   int // outer UDP header offset (tunnel)
	innerIP   int // offset of the IPv4 header the TCP segment is in
}

func (s tcpSegmenter) segment(pkt []byte, tcpOff int, bufs [][]byte, sizes []int, offset int) (int, error) {
	ip := s.innerIP
	if len(pkt) < ip+20 || pkt[ip]>>4 != 4 || pkt[ip+9] != 6 {
		return 0, malformed("inner header is not TCP/IPv4")
	}
	// A read cut short by the buffer would show here (the lengths of a
	// super-packet's headers cover all of it).
	if int(binary.BigEndian.Uint16(pkt[ip+2:])) != len(pkt)-ip || s.tunnel && int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
		return 0, malformed("ip lengths do not match the %d bytes read", len(pkt))
	}
	if ihl := int(pkt[ip]&0x0f) * 4; ihl < 20 || ip+ihl != tcpOff {
		return 0, malformed("tcp at %d, ip header at %d", tcpOff, ip)
	}
	if len(pkt) < tcpOff+20 {
		return 0, malformed("short tcp header")
	}
	// The kernel's hdr_len cannot be trusted on forwarded packets: the
	// TCP header length is read from the segment itself.
	tcpLen := int(pkt[tcpOff+12]>>4) * 4
	hdrs := tcpOff + tcpLen
	if tcpLen < 20 || len(pkt) < hdrs || s.mss <= 0 {
		return 0, malformed("tcp header length %d, mss %d", tcpLen, s.mss)
	}
	payload := len(pkt) - hdrs
	n := (payload + s.mss - 1) / s.mss
	if n == 0 {
		n = 1
	}
	if n > len(bufs) {
		return 0, errTooManySegments
	}
	seq := binary.BigEndian.Uint32(pkt[tcpOff+4:])
	innerID := binary.BigEndian.Uint16(pkt[ip+4:])
	outerID := binary.BigEndian.Uint16(pkt[4:])
	tcpFlags := pkt[tcpOff+13]
	for i := range n {
		lo := hdrs + i*s.mss
		hi := min(lo+s.mss, len(pkt))
		size := hdrs + hi - lo
		out := bufs[i][offset:]
		if len(out) < size {
			return 0, malformed("segment of %d bytes exceeds the buffer", size)
		}
		out = out[:size]
		copy(out, pkt[:hdrs])
		copy(out[hdrs:], pkt[lo:hi])

		in := out[ip:]
		binary.BigEndian.PutUint16(in[2:], uint16(size-ip))
		binary.BigEndian.PutUint16(in[4:], innerID+uint16(i))
		ipv4HeaderChecksum(in[:tcpOff-ip])

		t := out[tcpOff:]
		binary.BigEndian.PutUint32(t[4:], seq+uint32(i*s.mss))
		f := tcpFlags
		if i != n-1 {
			f &^= 0x01 | 0x08 // FIN and PSH only on the last segment
		}
		if i != 0 {
			f &^= 0x80 // CWR only on the first
		}
		t[13] = f
		t[16], t[17] = 0, 0
		binary.BigEndian.PutUint16(t[16:], ^fold(sum(t, pseudoSum(in, 6, len(t)))))

		if s.tunnel {
			binary.BigEndian.PutUint16(out[2:], uint16(size))
			binary.BigEndian.PutUint16(out[4:], outerID+uint16(i))
			ipv4HeaderChecksum(out[:20])
			u := out[s.outerTh:]
			binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
			u[6], u[7] = 0, 0
			if s.outerCsum {
				c := ^fold(sum(u, pseudoSum(out, 17, len(u))))
				if c == 0 {
					c = 0xffff
				}
				binary.BigEndian.PutUint16(u[6:], c)
			}
		}
		sizes[i] = size
	}
	return n, nil
}
