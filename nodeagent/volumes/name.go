package volumes

import "fmt"

// MaxNameLen bounds volume and snapshot names. With the driver's suffixes
// (".qcow2", ".tmp-<random>", ".json") a name stays far below NAME_MAX
// (255) and btrfs's subvolume name limit.
const MaxNameLen = 128

// ValidName reports whether s may name a volume or a snapshot. Every path
// the package builds from a caller's name goes through it first.
//
// Allowed: 1..128 ASCII letters, digits, '-', '_' and '.', starting with a
// letter or digit. That excludes '/', NUL, "." and "..", and names starting
// with '.', which the package reserves for its temporary files.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// checkName returns a CodeNameInvalid error for a name ValidName refuses.
// The message quotes the name with %q so a hostile one cannot forge log
// lines.
func checkName(what, s string) error {
	if !ValidName(s) {
		return newError(CodeNameInvalid, fmt.Sprintf("%s name %q: want 1-%d of [A-Za-z0-9_.-], starting with a letter or digit", what, s, MaxNameLen), nil)
	}
	return nil
}

// checkSize refuses sizes QEMU cannot use as a disk's virtual size.
func checkSize(size int64) error {
	if size <= 0 || size%512 != 0 {
		return newError(CodeSizeInvalid, fmt.Sprintf("size %d: want a positive multiple of 512 bytes", size), nil)
	}
	return nil
}
