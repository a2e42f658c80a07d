package images

import "errors"

// Stable error codes. The HTTP layer maps them to API errors; they must not
// change once published.
const (
	CodeURLInvalid         = "image_url_invalid"
	CodeSHA256Invalid      = "image_sha256_invalid"
	CodeChecksumMismatch   = "image_checksum_mismatch"
	CodeNotFound           = "image_not_found"
	CodeDownloadFailed     = "image_download_failed"
	CodeDownloadStalled    = "image_download_stalled"
	CodeUnreachable        = "image_unreachable"
	CodeTooLarge           = "image_too_large"
	CodeInvalidFormat      = "image_invalid_format"
	CodeDiskSmallerThanImg = "disk_smaller_than_image"
	CodeDiskExists         = "disk_exists"
	// CodeDiskCreateFailed keeps its first wire value: codes are a contract.
	CodeDiskCreateFailed = "image_overlay_failed"
	CodeCacheIO          = "image_cache_io"
	// CodeDownloadRefused: the URL's resolved address (or a redirect's) is
	// in a range the agent may not fetch from (--image-allow adds exceptions).
	CodeDownloadRefused = "image_download_refused"
	// CodeExternalReference: the image names another file (a backing file,
	// a json: filename, an external data file) that QEMU would open.
	CodeExternalReference = "image_external_reference"
	// CodeCorrupt: qemu-img check found the image inconsistent (a truncated
	// file, for one).
	CodeCorrupt = "image_corrupt"
	// CodeInsufficientStorage: the pool has no room for the image (checked
	// before a download, or the filesystem filled up during one); the
	// partial file is removed.
	CodeInsufficientStorage = "insufficient_storage"
	// CodeNotPresent: the pull policy is Never and the pool holds no base
	// for the URL (and digest) asked for.
	CodeNotPresent = "image_not_present"
	// CodePullPolicyInvalid: a pull policy that is not one of ours.
	CodePullPolicyInvalid = "image_pull_policy_invalid"
	// CodeInUse: a VM disk's backing chain uses the base; it is kept.
	CodeInUse = "image_in_use"
)

// Error is a failure with a stable Code. errors.Is matches another *Error
// with the same Code, so callers can write
// errors.Is(err, &images.Error{Code: images.CodeNotFound}).
type Error struct {
	Code    string
	Message string
	Err     error // the cause, if any
}

func (e *Error) Error() string {
	s := "images: " + e.Code + ": " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

var _ error = (*Error)(nil)

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
