//go:build !plot

package benchplot

// Write fails in a build without -tags plot; see the package comment.
func Write(path string, c Chart) error { return ErrNotBuilt }

// Enabled reports whether this build can draw (-tags plot).
func Enabled() bool { return false }
