package node

import (
	"context"
	"time"

	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
)

// tellVMs tells the actor of every VM whose observation changed since the
// last heartbeat what the node now observes. The VM actor decides whether it
// applies (placed here, no task in progress, newer than its status); it is
// told without waiting for an answer, so a slow VM never holds heartbeats up.
func (b *behaviour) tellVMs(node string, vms []messages.VMObserved) {
	if b.deps.VMs == nil {
		return
	}
	seen := make(map[string]messages.VMObserved, len(vms))
	for _, o := range vms {
		if o.ID == "" {
			continue
		}
		seen[o.ID] = o
		if prev, ok := b.observed[o.ID]; ok && sameObserved(prev, o) {
			continue
		}
		b.deps.Runtime.System.Root.Send(b.deps.VMs, system.Deliver{ID: o.ID, Msg: messages.ObserveVM{Node: node, Observed: o}})
	}
	b.observed = seen
}

// sameObserved compares two observations but for the time they were made.
func sameObserved(a, b messages.VMObserved) bool {
	a.ObservedAt, b.ObservedAt = time.Time{}, time.Time{}
	if (a.StartedAt == nil) != (b.StartedAt == nil) || a.StartedAt != nil && !a.StartedAt.Equal(*b.StartedAt) {
		return false
	}
	a.StartedAt, b.StartedAt = nil, nil
	return a == b
}

// vmsLost marks every VM placed on the node unknown once the node is gone.
// Nothing is deleted: the node's next heartbeat tells every VM what it
// observes (observed is cleared, so all are told) and heals them. The VMs
// are those the node's allocation document counts, which are exactly the
// VM rows whose status names the node (persistence/store/allocations.go),
// so finding them costs the node's VMs, not every VM.
func (b *behaviour) vmsLost(n *messages.Node) {
	b.observed = nil
	if b.deps.VMs == nil {
		return
	}
	name, since := n.Name, b.lastSeen.UTC()
	st, rt, vms, log := b.deps.Store, b.deps.Runtime, b.deps.VMs, b.deps.Log
	msg := messages.MarkVMUnknown{Node: name,
		Message: "node " + name + " is gone (no heartbeat since " + since.Format(time.RFC3339) + "); the vm's state is unknown until it returns"}
	rt.Go(nil, func(c context.Context) any {
		alloc, err := st.Allocation(c, name)
		if err != nil {
			log.Warn("read the vms of a gone node", "node", name, "err", err)
			return nil
		}
		for _, id := range alloc.VMs {
			rt.System.Root.Send(vms, system.Deliver{ID: id, Msg: msg})
		}
		return nil
	})
}
