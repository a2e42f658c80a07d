package volumes

import "errors"

// Stable error codes. The agent API and the control plane map them to API
// errors; they must not change once published.
const (
	// CodeNameInvalid: a volume or snapshot name fails ValidName; nothing
	// was built from it.
	CodeNameInvalid = "volume_name_invalid"
	// CodeSizeInvalid: a size of zero, below zero, or not a multiple of 512.
	CodeSizeInvalid = "volume_size_invalid"
	// CodeNotFound: no volume of that name in the pool.
	CodeNotFound = "volume_not_found"
	// CodeExists: a volume of that name is already in the pool.
	CodeExists = "volume_exists"
	// CodeShrinkUnsupported: a resize to fewer bytes than the volume has;
	// shrinking would cut off guest data, so it is never done.
	CodeShrinkUnsupported = "volume_shrink_unsupported"
	// CodeInsufficientStorage: the filesystem ran out of space (ENOSPC or
	// EDQUOT) during a create, clone or snapshot; the partial file is gone.
	CodeInsufficientStorage = "insufficient_storage"
	// CodeOwnedByOtherNode: on a shared pool another node holds the
	// volume's owner marker with an epoch at least as high as ours.
	CodeOwnedByOtherNode = "volume_owned_by_other_node"
	// CodeSnapshotNotFound: no snapshot of that name on the volume.
	CodeSnapshotNotFound = "volume_snapshot_not_found"
	// CodeSnapshotExists: the volume already has a snapshot of that name.
	CodeSnapshotExists = "volume_snapshot_exists"
	// CodeSnapshotInUse: another volume's backing chain reads the snapshot
	// (a clone made as a qcow2 overlay), so it cannot be deleted.
	CodeSnapshotInUse = "volume_snapshot_in_use"
	// CodeBaseInvalid: the image base file is missing, not a regular file,
	// or in a format the driver cannot build on.
	CodeBaseInvalid = "volume_base_invalid"
	// CodeDriverUnsupported: an unknown driver name, or a pool path whose
	// filesystem the driver cannot use (btrfs on ext4, for one).
	CodeDriverUnsupported = "volume_driver_unsupported"
	// CodeIO: any other failure of the filesystem or of qemu-img.
	CodeIO = "volume_io"
)

// Error is a failure with a stable Code. errors.Is matches another *Error
// with the same Code, so callers can write
// errors.Is(err, &volumes.Error{Code: volumes.CodeNotFound}).
type Error struct {
	Code    string
	Message string
	Err     error // the cause, if any
}

var _ error = (*Error)(nil)

func (e *Error) Error() string {
	s := "volumes: " + e.Code + ": " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches an *Error with the same Code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// ErrorCode returns the Code of the first *Error in err's chain, or "".
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func newError(code, msg string, cause error) *Error {
	return &Error{Code: code, Message: msg, Err: cause}
}
