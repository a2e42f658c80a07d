package watch

import (
	"errors"
	"fmt"
)

var (
	// ErrResync ends a subscriber that fell behind by more than its buffer,
	// or whose feed broke: it must list again and watch from there.
	ErrResync = errors.New("watch: subscriber fell behind; list again")
	// ErrClosed ends every subscriber when the hub stops.
	ErrClosed = errors.New("watch: hub closed")
	// ErrFutureRevision refuses a start revision etcd has not reached.
	ErrFutureRevision = errors.New("watch: revision is in the future")
)

// CompactedError refuses a start revision whose history etcd has compacted
// away: the caller must list again.
type CompactedError struct {
	// Since is what was asked; Compacted the oldest revision still kept.
	Since, Compacted int64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("watch: revision %d is compacted (history starts at %d)", e.Since, e.Compacted)
}
