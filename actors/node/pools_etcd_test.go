//go:build etcd

package node_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/messages"
)

// TestPoolReportsWrittenOnlyWhenTheyMove: pool figures that drift a
// little on every beat do not write the row (its etcd revision stays);
// a move of more than 1% of the pool, a health change or a new pool does,
// and the in-memory view the API reads is always the latest report.
func TestPoolReportsWrittenOnlyWhenTheyMove(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	const total = 100 << 30
	beat := func(now time.Time, used int64, health string, extra ...messages.PoolStatus) *messages.Node {
		m := hb(2, now)
		m.Observed.Pools = append([]messages.PoolStatus{{Name: "default", ID: "p1", Driver: "dir", Path: "/p",
			TotalBytes: total, UsedBytes: used, FreeBytes: total - used, Health: health}}, extra...)
		return h.ask(m)
	}
	now := t0
	beat(now, 10<<30, messages.PoolHealthOK)
	v := h.version()
	used := int64(10 << 30)
	for range 20 {
		now, used = now.Add(10*time.Second), used+(16<<20) // 16 MiB a beat: 320 MiB in all, under 1 GiB
		n := beat(now, used, messages.PoolHealthOK)
		if n.Status.Pools[0].UsedBytes != used {
			t.Fatalf("in-memory used %d, want %d", n.Status.Pools[0].UsedBytes, used)
		}
	}
	if got := h.version(); got != v {
		t.Fatalf("drifting pool figures wrote the row %d times", got-v)
	}
	// Beyond 1% of 100 GiB since the last write: one write.
	used += 1 << 30
	beat(now.Add(10*time.Second), used, messages.PoolHealthOK)
	if got := h.version(); got != v+1 {
		t.Fatalf("a 1.3 GiB move: %d writes, want 1", got-v)
	}
	beat(now.Add(20*time.Second), used, messages.PoolHealthError)
	if got := h.version(); got != v+2 {
		t.Fatalf("health change: %d writes, want 2", got-v)
	}
	beat(now.Add(30*time.Second), used, messages.PoolHealthError,
		messages.PoolStatus{Name: "fast", ID: "p2", Driver: "dir", Path: "/srv/fast", Health: messages.PoolHealthOK, TotalBytes: 1 << 30})
	if got := h.version(); got != v+3 {
		t.Fatalf("new pool: %d writes, want 3", got-v)
	}
	row, err := h.st.GetNode(t.Context(), h.nodeID)
	if err != nil || len(row.Status.Pools) != 2 || row.Status.Pools[0].Health != messages.PoolHealthError {
		t.Fatalf("row pools: %+v %v", row.Status.Pools, err)
	}
	if n := h.ask(node.Get{}); n.Status.Pools[0].UsedBytes != used {
		t.Fatalf("get: %+v", n.Status.Pools)
	}
}
