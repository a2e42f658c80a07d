package qemu

import (
	"strconv"
	"strings"
)

// Names of a disk's device and block nodes, all derived from its id.
//
// A disk id is 1-16 of [a-z0-9], starting with a letter ("disk0" is the
// boot disk, argv.go). It carries no '-' so the derived names cannot
// collide: the device is "<id>", the active image's format node "<id>"
// and its file node "<id>-file" when the disk is attached, a backing image
// i below it "<id>-b<i>" (file "<id>-b<i>-file"), and the overlay of
// snapshot seq "<id>-s<seq>" (file "<id>-s<seq>-file"). QEMU allows 31
// bytes in a node name; the longest here is 16+2+5+5 = 28.

// MaxDiskID is the longest disk id.
const MaxDiskID = 16

// MaxSnapshotSeq bounds the sequence number in an overlay's node name.
const MaxSnapshotSeq = 99999

// MaxChainDepth is the deepest live chain Snapshot builds (images of one
// disk, its backing images included). QEMU's block queries grow with the
// square of the depth (see maxQMPLine) and every read of a deep chain
// walks it: merge old snapshots (Commit, Stream) before going deeper.
const MaxChainDepth = 64

// MaxSerial is the longest virtio-blk serial: the guest reads 20 bytes.
const MaxSerial = 20

func checkDiskID(id string) error {
	if id == "" || len(id) > MaxDiskID || id[0] < 'a' || id[0] > 'z' {
		return ErrInvalidDisk.with(nil, "disk id %q: want 1-%d of [a-z0-9], starting with a letter", id, MaxDiskID)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return ErrInvalidDisk.with(nil, "disk id %q: want 1-%d of [a-z0-9], starting with a letter", id, MaxDiskID)
		}
	}
	return nil
}

// checkSerial accepts what a guest's udev turns into a by-id name as is.
func checkSerial(s string) error {
	if s == "" || len(s) > MaxSerial || !isName(s, "._-") {
		return ErrInvalidDisk.with(nil, "serial %q: want 1-%d of [A-Za-z0-9._-]", s, MaxSerial)
	}
	return nil
}

// TopNode is the format node of a disk attached with its image on top.
func TopNode(id string) string { return id }

// BackingNode is the format node of the i-th backing image below a
// hot-plugged disk's top image (0 is the nearest).
func BackingNode(id string, i int) string { return id + "-b" + strconv.Itoa(i) }

// OverlayNode is the format node of the overlay snapshot seq put on disk id.
func OverlayNode(id string, seq int) string { return id + "-s" + strconv.Itoa(seq) }

// FileNode is the file (protocol) node under format node n.
func FileNode(n string) string { return n + "-file" }

// DiskOfNode returns the disk id a node name derives from ("data1" for
// "data1-s3-file"), or the name itself when it is not one of ours.
func DiskOfNode(node string) string {
	if i := strings.IndexByte(node, '-'); i > 0 {
		return node[:i]
	}
	return node
}
