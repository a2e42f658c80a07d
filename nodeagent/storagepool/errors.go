package storagepool

import "errors"

// Errors of pool realisation. Each is reported as the pool's health
// message, never as an agent failure: a pool that cannot be realised is
// one broken pool, the node and its other pools keep working.
var (
	// ErrForeignMarker: the path carries another cluster's or another
	// pool's ownership marker.
	ErrForeignMarker = errors.New("storagepool: path belongs to another cluster or pool")
	// ErrForeignDirectory: the path is a non-empty directory without our
	// marker; taking it over could mix our files with someone else's.
	ErrForeignDirectory = errors.New("storagepool: path is a non-empty directory this cluster does not own")
	// ErrNotBtrfs: a btrfs pool's path is on another filesystem.
	ErrNotBtrfs = errors.New("storagepool: path is not on btrfs")
	// ErrNotDirectory: the path exists and is not a directory (a symlink
	// included: the marker must be in the directory itself).
	ErrNotDirectory = errors.New("storagepool: path is not a directory")
	// ErrNotMounted: a shared pool's path is not a mount point.
	ErrNotMounted = errors.New("storagepool: shared pool path is not a mount point")
	// ErrUnresponsive: the pool's filesystem did not answer in time (a
	// hung network mount); the probe is left running and not repeated
	// until it returns.
	ErrUnresponsive = errors.New("storagepool: filesystem did not answer in time")
)
