package messages

import (
	"crypto/rand"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

var (
	idMu      sync.Mutex
	idEntropy = ulid.Monotonic(rand.Reader, 0)
)

// NewID returns a time-ordered, lexically sortable identifier (a ULID in
// lower case), so ranging over row keys lists resources in creation order.
func NewID() string {
	idMu.Lock()
	defer idMu.Unlock()
	return toLower(ulid.MustNew(ulid.Timestamp(time.Now()), idEntropy).String())
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ValidID reports whether s has the shape of an id NewID made.
func ValidID(s string) bool {
	if len(s) != ulid.EncodedSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}
