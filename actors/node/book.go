package node

import (
	"maps"
	"sync"
)

// Book is a replica's copy of the VM samples its node actors hold: each
// actor puts its node's samples here as it keeps them. It is read without
// asking any actor, so that another replica's question ("which samples do
// you hold?") neither starts actors for nodes that heartbeat elsewhere nor
// waits behind a heartbeat. Safe for concurrent use; a nil *Book keeps
// nothing.
type Book struct {
	mu sync.RWMutex
	m  map[string]Metrics
}

// NewBook returns an empty book.
func NewBook() *Book { return &Book{m: make(map[string]Metrics)} }

// put records node id's samples, replacing what was there. The samples are
// never changed in place afterwards (keepMetrics replaces them whole).
func (b *Book) put(id string, m Metrics) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.ReceivedAt.IsZero() {
		delete(b.m, id)
		return
	}
	b.m[id] = m
}

// Get returns the samples of node id, if this replica holds any.
func (b *Book) Get(id string) (Metrics, bool) {
	if b == nil {
		return Metrics{}, false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	m, ok := b.m[id]
	return m, ok
}

// All returns every node's samples this replica holds, by node id. The
// samples' slices are shared: callers must not change them.
func (b *Book) All() map[string]Metrics {
	if b == nil {
		return nil
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return maps.Clone(b.m)
}
