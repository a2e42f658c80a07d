package volumes

import (
	"crypto/rand"
	"encoding/binary"
)

// randUint32 makes temporary names unique; crypto/rand so two nodes
// started at the same instant never pick the same one.
func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])
}
