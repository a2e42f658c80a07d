package node

import (
	"slices"
	"time"

	"github.com/otherix/otherix/messages"
)

// The VM samples a heartbeat carries are kept in the node actor's memory
// and never written to etcd: they change at every heartbeat, and a write
// per node per interval (let alone per VM) would multiply etcd's write
// load and its history (kept for watch resumption) for values that the
// next heartbeat replaces. The cost is that they live on the replica that
// receives the node's heartbeats (like the last heartbeat time). Each actor
// copies them into its replica's Book, which other replicas read through
// GET /v1/cluster/node-metrics, so that any replica answers with them
// (actors/gateway, samples).

// keepMetrics replaces the node's samples with those of hb, received at now.
func (b *behaviour) keepMetrics(hb messages.Heartbeat, now time.Time) {
	b.metrics = Metrics{ReceivedAt: now, VMs: messages.SanitizeVMMetrics(hb.VMMetrics),
		Omitted: max(hb.OmittedVMMetrics, 0) + max(len(hb.VMMetrics)-messages.MaxMetricsVMs, 0)}
	b.deps.Book.put(b.id, b.metrics)
}

// getMetrics answers the node and a copy of its samples. The samples are
// replaced, never changed in place, so sharing the drive and NIC slices
// with the copy is safe.
func (b *behaviour) getMetrics() plan {
	m := b.metrics
	m.VMs = slices.Clone(m.VMs)
	return plan{Answer: func(n *messages.Node) Reply { return Reply{Node: view(n), Metrics: &m} }}
}
