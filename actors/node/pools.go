package node

import "github.com/otherix/otherix/messages"

// Pool figures are written to the node's row only when they moved enough
// to matter: a pool in use changes its used and free bytes on every
// heartbeat, and a write per heartbeat per node is what the node actor
// exists to avoid. Identity, health and message are written at once.
const (
	// poolDriftFloor is the smallest move in used or free bytes worth a
	// write, whatever the pool's size.
	poolDriftFloor = 64 << 20
	// poolDriftDivisor: a move of 1/100 of the pool's total is worth one.
	poolDriftDivisor = 100
)

// poolsMoved reports whether the pools a heartbeat reports differ enough
// from those last written to be written again: a pool added, removed or
// renamed, its path, driver, id, total, health or message changed, or its
// used or free bytes moved by more than the drift allowance. Figures on
// the row are thus at most 1% of the pool (or 64 MiB) behind; the node
// actor's in-memory copy, which the API reads, is exact.
func poolsMoved(written, next []messages.PoolStatus) bool {
	if len(written) != len(next) {
		return true
	}
	for i := range next {
		w, n := written[i], next[i]
		if w.Name != n.Name || w.ID != n.ID || w.Driver != n.Driver || w.Path != n.Path ||
			w.TotalBytes != n.TotalBytes || w.Health != n.Health || w.Message != n.Message {
			return true
		}
		allow := max(n.TotalBytes/poolDriftDivisor, poolDriftFloor)
		if abs(w.UsedBytes-n.UsedBytes) >= allow || abs(w.FreeBytes-n.FreeBytes) >= allow {
			return true
		}
	}
	return false
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
