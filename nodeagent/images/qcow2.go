package images

import (
	"errors"
	"fmt"
	"strings"

	"github.com/otherix/otherix/nodeagent/qcow2"
)

// checkQCOW2Header reads the header of the qcow2 image at p and refuses,
// before any qemu-img sees the file, everything that would make QEMU open a
// path the image itself names: a backing file (a plain path or a json:
// filename, with or without a format) and an external data file. Encrypted
// images (they need a secret we do not have) and a virtual size above
// maxVirtual are refused too.
//
// This is the root check, not qemu-img info: qemu-img's own header parser
// is what we do not want to trust with a hostile file, and some qemu-img
// subcommands (check, convert) open the data file the header names.
func checkQCOW2Header(p string, maxVirtual int64) (qcow2Header, error) {
	return parseQCOW2Header(p, maxVirtual, false)
}

// parseQCOW2Header is checkQCOW2Header; with allowBacking a backing file
// is accepted instead of refused (a VM disk has one: its base).
func parseQCOW2Header(p string, maxVirtual int64, allowBacking bool) (qcow2Header, error) {
	h, err := qcow2.Read(p)
	if err != nil && !errors.Is(err, qcow2.ErrInvalid) {
		return qcow2Header{}, newError(CodeCacheIO, "read qcow2 header", err)
	}
	if err := judgeQCOW2(h, err, maxVirtual, allowBacking); err != nil {
		return qcow2Header{}, err
	}
	return qcow2Header{Header: h, VirtualSize: int64(h.Size)}, nil
}

// qcow2Header is a header that passed judgeQCOW2.
type qcow2Header struct {
	qcow2.Header
	VirtualSize int64 // Size, known to fit: at most the limit it was judged by
}

// judgeQCOW2 is the refusal policy on a parsed header. perr is the parse
// error, if any: the fields decoded before it still decide the code, so an
// image naming another file is reported as an external reference even when
// it is malformed further on.
func judgeQCOW2(h qcow2.Header, perr error, maxVirtual int64, allowBacking bool) error {
	if h.NamesBacking() && !allowBacking {
		return newError(CodeExternalReference, "download refused: image names a backing file", nil)
	}
	if h.ExternalData() || h.RawExternalData() {
		return newError(CodeExternalReference, "download refused: image uses an external data file", nil)
	}
	if h.Size > uint64(maxVirtual) {
		return newError(CodeTooLarge, fmt.Sprintf("download refused: image virtual size %d bytes exceeds the limit of %d", h.Size, maxVirtual), nil)
	}
	if h.CryptMethod != 0 {
		return invalidFormat("encrypted qcow2 images are not supported")
	}
	if perr != nil {
		return invalidFormat(qcow2Reason(perr))
	}
	// The extensions count wherever QEMU would read them, whatever the
	// feature bits say.
	if h.DataFileExtension {
		return newError(CodeExternalReference, "download refused: image names an external data file", nil)
	}
	if h.EncryptionExtension {
		return invalidFormat("encrypted qcow2 images are not supported")
	}
	return nil
}

// qcow2Reason is the parser's reason without its package prefix; it never
// quotes the image's names, only offsets and sizes.
func qcow2Reason(err error) string {
	if msg, ok := strings.CutPrefix(err.Error(), qcow2.ErrInvalid.Error()+": "); ok {
		return "qcow2 " + msg
	}
	return err.Error()
}

// invalidFormat refuses a download that is not an image we accept.
func invalidFormat(msg string) *Error {
	return newError(CodeInvalidFormat, "download refused: "+msg, nil)
}
