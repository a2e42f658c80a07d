//go:build etcd

package node_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

// rowRevision is the node row's mod revision.
func (h *harness) rowRevision() int64 {
	h.t.Helper()
	resp, err := h.st.Client().Get(h.t.Context(), store.RowKey(store.Nodes, h.nodeID))
	if err != nil || len(resp.Kvs) != 1 {
		h.t.Fatalf("row: %v", err)
	}
	return resp.Kvs[0].ModRevision
}

// TestNodeEventsInTheTransactionOfTheChange: ready, unreachable, gone and
// ready again each write one event with the row's write; heartbeats and
// liveness checks that change no phase write none. The first heartbeat
// with an overlay key, which takes a tunnel address in its own
// transaction, carries the event too.
func TestNodeEventsInTheTransactionOfTheChange(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	seen := 0
	check := func(typ, reason string) *messages.Event {
		t.Helper()
		e := storetest.NewEvents(t, h.st, &seen, 1)[0]
		if e.Type != typ || e.Reason != reason || e.Revision != h.rowRevision() ||
			e.Object != (messages.EventObject{Kind: "node", ID: h.nodeID, Name: "n1"}) || e.Owner != "" {
			t.Fatalf("event %+v at %d, want %s/%s at the row's revision %d", e, e.Revision, typ, reason, h.rowRevision())
		}
		return e
	}
	first := hb(2, t0)
	first.Observed.Overlay = &messages.NodeOverlay{PublicKey: "k1", Endpoint: "192.0.2.1:51820", WireGuard: "kernel", Reconciled: true}
	first.Supernet = messages.DefaultOverlaySupernet
	if n := h.ask(first); n.TunnelIP == "" {
		t.Fatalf("no tunnel address: %+v", n)
	}
	check(messages.EventNodeReady, messages.ReasonHeartbeat)
	now := t0
	for range 3 {
		now = now.Add(10 * time.Second)
		m := hb(4, now) // a changed capacity is written, but is no event
		m.Observed.Overlay, m.Supernet = first.Observed.Overlay, first.Supernet
		h.ask(m)
		h.ask(node.CheckLiveness{Now: now})
	}
	storetest.NewEvents(t, h.st, &seen, 0)
	now = now.Add(30 * time.Second)
	h.ask(node.CheckLiveness{Now: now})
	if e := check(messages.EventNodeUnreachable, messages.ReasonHeartbeatMissed); e.Severity != messages.SeverityWarning {
		t.Fatalf("unreachable is a warning: %+v", e)
	}
	now = now.Add(5 * time.Minute)
	h.ask(node.CheckLiveness{Now: now})
	check(messages.EventNodeGone, messages.ReasonHeartbeatMissed)
	h.ask(node.CheckLiveness{Now: now.Add(time.Hour)})
	storetest.NewEvents(t, h.st, &seen, 0)
	back := hb(4, now.Add(time.Hour))
	back.Observed.Overlay, back.Supernet = first.Observed.Overlay, first.Supernet
	h.ask(back)
	if e := check(messages.EventNodeReady, messages.ReasonHeartbeat); e.Message != "node n1 is ready again (was gone)" {
		t.Fatalf("ready again: %q", e.Message)
	}
}
