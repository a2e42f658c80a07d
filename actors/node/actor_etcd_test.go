//go:build etcd

package node_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

type harness struct {
	t      *testing.T
	st     *store.Store
	rt     *system.Runtime
	nodes  *actor.PID
	nodeID string
}

// start runs one node guardian over a fresh etcd member with one pending
// node; boot is the control plane's start time.
func start(t *testing.T, boot time.Time) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := storetest.New(t)
	n := &messages.Node{ID: messages.NewID(), Name: "n1", Phase: messages.NodePending, EnrolledAt: boot}
	if err := st.Commit(ctx, store.CreateNode(store.NewTxn(), n)); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	rt := system.NewRuntime(log)
	t.Cleanup(rt.Stop)
	deps := node.Deps{Runtime: rt, Store: st, Log: log,
		Config: node.Config{Interval: 10 * time.Second, GoneAfter: 5 * time.Minute, Boot: boot}}
	pid, err := rt.System.Root.SpawnNamed(system.NewGuardian(rt, "node",
		func(id string) *actor.Props { return node.Props(deps, id) }, nil), "nodes")
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, st: st, rt: rt, nodes: pid, nodeID: n.ID}
}

func (h *harness) ask(msg any) *messages.Node {
	h.t.Helper()
	res, err := h.rt.System.Root.RequestFuture(h.nodes, system.Deliver{ID: h.nodeID, Msg: msg}, 5*time.Second).Result()
	if err != nil {
		h.t.Fatalf("ask %T: %v", msg, err)
	}
	r := res.(node.Reply)
	if r.Err != nil {
		h.t.Fatalf("%T: %v", msg, r.Err)
	}
	return r.Node
}

// version is how many times the row was written since creation.
func (h *harness) version() int64 {
	h.t.Helper()
	resp, err := h.st.Client().Get(h.t.Context(), store.RowKey(store.Nodes, h.nodeID))
	if err != nil || len(resp.Kvs) != 1 {
		h.t.Fatalf("row: %v", err)
	}
	return resp.Kvs[0].Version
}

func hb(cpus int, now time.Time) node.Heartbeat {
	return node.Heartbeat{Now: now, Observed: messages.Heartbeat{AgentVersion: "1", Arch: "amd64",
		Capacity: messages.NodeCapacity{CPUs: cpus, MemoryMiB: 1024, Accelerator: "tcg"}, Pools: []messages.PoolStatus{}}}
}

// TestNodeActor drives one actor with messages: one write for the first
// heartbeat, none for identical ones, one for a change, and the liveness
// moves with a fake clock.
func TestNodeActor(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	v0 := h.version()
	if n := h.ask(hb(2, t0)); n.Phase != messages.NodeReady || h.version() != v0+1 {
		t.Fatalf("first heartbeat: %s, version %d", n.Phase, h.version())
	}
	now := t0
	for range 10 {
		now = now.Add(10 * time.Second)
		h.ask(hb(2, now))
	}
	if v := h.version(); v != v0+1 {
		t.Fatalf("identical heartbeats wrote: version %d", v)
	}
	if n := h.ask(node.Get{}); !n.Status.LastHeartbeatAt.Equal(now) {
		t.Fatalf("last heartbeat %v, want %v", n.Status.LastHeartbeatAt, now)
	}
	h.ask(hb(4, now))
	if v := h.version(); v != v0+2 {
		t.Fatalf("changed capacity: version %d", v)
	}
	for _, step := range []struct {
		after time.Duration
		want  string
	}{
		{29 * time.Second, messages.NodeReady},
		{time.Second, messages.NodeUnreachable},
		{4 * time.Minute, messages.NodeUnreachable},
		{time.Minute, messages.NodeGone},
	} {
		now = now.Add(step.after)
		if n := h.ask(node.CheckLiveness{Now: now}); n.Phase != step.want {
			t.Fatalf("at +%v: %s, want %s", now.Sub(t0), n.Phase, step.want)
		}
	}
	v := h.version()
	if n := h.ask(hb(4, now)); n.Phase != messages.NodeReady || h.version() != v+1 {
		t.Fatalf("back: %s, version %d", n.Phase, h.version())
	}
	if n := h.ask(node.SetCordoned{Cordoned: true, Now: now}); !n.Cordoned {
		t.Fatal("not cordoned")
	}
	if n := h.ask(node.Delete{}); n != nil {
		t.Fatalf("deleted node answered %+v", n)
	}
	res, err := h.rt.System.Root.RequestFuture(h.nodes, system.Deliver{ID: h.nodeID, Msg: node.Get{}}, 5*time.Second).Result()
	if err != nil || messages.KindOf(res.(node.Reply).Err) != messages.KindNotFound {
		t.Fatalf("after delete: %+v %v", res, err)
	}
}

// TestBootGrace: a fresh actor counts a ready node's silence from boot.
func TestBootGrace(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	h.ask(hb(2, t0.Add(-time.Hour))) // before "boot": as if written by a previous process
	restarted := make(chan struct{}, 1)
	es := h.rt.System.EventStream
	sub := es.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.SupervisorEvent); ok && e.Directive == actor.RestartDirective {
			select {
			case restarted <- struct{}{}:
			default:
			}
		}
	})
	defer es.Unsubscribe(sub)
	h.rt.System.Root.Send(h.nodes, system.Deliver{ID: h.nodeID, Msg: system.Crashed{Reason: "test restart"}})
	select {
	case <-restarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the node actor was not restarted")
	}
	// Messages sent from here on wait in the mailbox until the restart
	// completes, so the next ask reaches the new incarnation.
	if n := h.ask(node.CheckLiveness{Now: t0.Add(29 * time.Second)}); n.Phase != messages.NodeReady {
		t.Fatalf("within the grace: %s", n.Phase)
	}
	if n := h.ask(node.CheckLiveness{Now: t0.Add(31 * time.Second)}); n.Phase != messages.NodeUnreachable {
		t.Fatalf("after the grace: %s", n.Phase)
	}
}

// TestEndpointWrittenWhenItChanges: the agent's endpoint is kept on the node
// and, like the rest, written only when it changes.
func TestEndpointWrittenWhenItChanges(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	withEndpoint := func(now time.Time, ep string) node.Heartbeat {
		m := hb(2, now)
		m.Observed.Endpoint = ep
		return m
	}
	h.ask(withEndpoint(t0, "https://10.0.0.1:7444"))
	v := h.version()
	if n := h.ask(withEndpoint(t0.Add(10*time.Second), "https://10.0.0.1:7444")); n.Endpoint != "https://10.0.0.1:7444" || h.version() != v {
		t.Fatalf("same endpoint: %q, version %d → %d", n.Endpoint, v, h.version())
	}
	h.ask(withEndpoint(t0.Add(20*time.Second), "https://10.0.0.2:7444"))
	n, err := h.st.GetNode(t.Context(), h.nodeID)
	if err != nil || n.Endpoint != "https://10.0.0.2:7444" || h.version() != v+1 {
		t.Fatalf("changed endpoint: %+v %v, version %d", n, err, h.version())
	}
}

// TestNodeActorOverlay: the first heartbeat with a key allocates a tunnel
// IP in the write that records the key; the same overlay again writes
// nothing, a reconcile error only changes memory, a new endpoint is written
// and the tunnel IP stays; the node's delete frees it.
func TestNodeActorOverlay(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	withOverlay := func(now time.Time, endpoint, errMsg string) node.Heartbeat {
		m := hb(2, now)
		m.Observed.Overlay = &messages.NodeOverlay{PublicKey: "k1", Endpoint: endpoint, WireGuard: "kernel",
			Reconciled: errMsg == "", Error: errMsg}
		return m
	}
	h.ask(hb(2, t0))
	v := h.version()
	n := h.ask(withOverlay(t0.Add(time.Second), "192.0.2.1:51820", ""))
	if n.TunnelIP != "100.87.0.1" || n.Status.Overlay == nil || n.Status.Overlay.WireGuard != "kernel" || h.version() != v+1 {
		t.Fatalf("join: %+v, version %d want %d", n, h.version(), v+1)
	}
	h.ask(withOverlay(t0.Add(2*time.Second), "192.0.2.1:51820", ""))
	n = h.ask(withOverlay(t0.Add(3*time.Second), "192.0.2.1:51820", "nftables: busy"))
	if h.version() != v+1 || n.Status.Message != "overlay: nftables: busy" || n.Status.Overlay.Error != "nftables: busy" {
		t.Fatalf("unchanged overlay or reconcile error wrote the row (version %d) or is not shown: %+v", h.version(), n.Status)
	}
	n = h.ask(withOverlay(t0.Add(4*time.Second), "192.0.2.9:51820", ""))
	row, err := h.st.GetNode(t.Context(), h.nodeID)
	if err != nil || h.version() != v+2 || row.Status.Overlay.Endpoint != "192.0.2.9:51820" || row.TunnelIP != "100.87.0.1" ||
		n.Status.Message != "" {
		t.Fatalf("new endpoint: %+v %v, version %d", row, err, h.version())
	}
	h.ask(node.Delete{})
	if _, err := h.st.TunnelIPOwner(t.Context(), "100.87.0.1"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("tunnel ip still held after delete: %v", err)
	}
}

// TestNodeActorHostConflictCondition: conflicts the agent reports make the
// HostNetworkConflict condition True with each collision in its message,
// written to the row (other replicas and node describe read it there) once,
// not at every heartbeat; the host's prefixes are written when they change;
// a clean reconcile turns the condition False with a new transition time.
func TestNodeActorHostConflictCondition(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	conflict := messages.HostConflict{Prefix: "10.240.0.0/12", Use: "overlay supernet on oxwg0", Taken: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}
	taken := []messages.HostPrefix{{Prefix: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}}
	beat := func(now time.Time, cs ...messages.HostConflict) *messages.Node {
		m := hb(2, now)
		m.Observed.Overlay = &messages.NodeOverlay{PublicKey: "k1", Endpoint: "192.0.2.1:51820", WireGuard: "userspace", Conflicts: cs}
		m.Observed.HostPrefixes = taken
		return h.ask(m)
	}
	beat(t0)
	v := h.version()
	beat(t0.Add(time.Second), conflict)
	row, err := h.st.GetNode(t.Context(), h.nodeID)
	if err != nil || h.version() != v+1 {
		t.Fatalf("conflict not written: %v, version %d want %d", err, h.version(), v+1)
	}
	c := row.Status.Conditions
	if len(c) != 1 || c[0].Type != "HostNetworkConflict" || c[0].Status != "True" || c[0].Reason != "PrefixOverlapsHost" ||
		!strings.Contains(c[0].Message, "overlay supernet on oxwg0 10.240.0.0/12 overlaps 10.255.255.53/32 (resolver /etc/resolv.conf)") ||
		!c[0].LastTransitionTime.Equal(t0.Add(time.Second)) {
		t.Fatalf("conditions %+v", c)
	}
	if len(row.Status.HostPrefixes) != 1 || row.Status.HostPrefixes[0] != taken[0] {
		t.Fatalf("host prefixes %+v", row.Status.HostPrefixes)
	}
	beat(t0.Add(2*time.Second), conflict)
	if h.version() != v+1 {
		t.Fatalf("the same conflict wrote the row again: version %d", h.version())
	}
	n := beat(t0.Add(3 * time.Second))
	c = n.Status.Conditions
	if h.version() != v+2 || len(c) != 1 || c[0].Status != "False" || c[0].Reason != "NoConflict" || !c[0].LastTransitionTime.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("after a clean reconcile: version %d, %+v", h.version(), c)
	}
	taken = append(taken, messages.HostPrefix{Prefix: "192.0.2.0/24", Source: "route dev eth0"})
	beat(t0.Add(4 * time.Second))
	if row, err := h.st.GetNode(t.Context(), h.nodeID); err != nil || h.version() != v+3 || len(row.Status.HostPrefixes) != 2 {
		t.Fatalf("new host prefix not written: %v, version %d", err, h.version())
	}
}

// TestHeartbeatAfterAnotherWriter: a heartbeat whose write finds the row
// changed by another writer (a cordon through another replica) is planned
// again against the row as it is, so neither change is lost and the agent
// gets no error.
func TestHeartbeatAfterAnotherWriter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := start(t, t0)
	h.ask(hb(2, t0))
	row, err := h.st.GetNode(t.Context(), h.nodeID)
	if err != nil {
		t.Fatal(err)
	}
	row.Cordoned = true
	if err := h.st.Commit(t.Context(), store.UpdateNode(store.NewTxn(), row)); err != nil {
		t.Fatal(err)
	}
	n := h.ask(hb(4, t0.Add(10*time.Second)))
	if !n.Cordoned || n.Status.Capacity.CPUs != 4 {
		t.Fatalf("after the other write: cordoned %v, cpus %d", n.Cordoned, n.Status.Capacity.CPUs)
	}
	row, err = h.st.GetNode(t.Context(), h.nodeID)
	if err != nil || !row.Cordoned || row.Status.Capacity.CPUs != 4 || row.Revision != n.Revision {
		t.Fatalf("row: %+v %v", row, err)
	}
}
