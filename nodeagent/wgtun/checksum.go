package wgtun

import (
	"encoding/binary"
	"math/bits"
)

// sum adds b to the running one's-complement sum acc as big-endian 16-bit
// words, 8 bytes at a time (a segment's payload is summed once per segment,
// so this is on the data path).
func sum(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	acc += carry
	if acc < carry {
		acc++
	}
	// The tail keeps its byte positions within a zero-padded word.
	var pad [8]byte
	copy(pad[:], b)
	tail := binary.BigEndian.Uint64(pad[:])
	var c uint64
	acc, c = bits.Add64(acc, tail, 0)
	return acc + c
}

// fold reduces a running sum to 16 bits (not complemented).
func fold(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// pseudoSum is the IPv4 pseudo-header's contribution to a TCP or UDP
// checksum: addresses, protocol and the transport length.
func pseudoSum(ip []byte, proto byte, length int) uint64 {
	acc := sum(ip[12:20], 0)
	return acc + uint64(proto) + uint64(length)
}

// ipv4HeaderChecksum rewrites the checksum of the IPv4 header h.
func ipv4HeaderChecksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^fold(sum(h, 0)))
}
