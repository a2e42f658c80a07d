package messages

import "time"

// HeldNodeMetrics is the VM samples of one node's last heartbeat as the
// replica that received it holds them in memory. Replicas ask each other
// for them (GET /v1/cluster/node-metrics on the agent listener, with their
// peer certificates), so that any replica answers GET /v1/vms/{id}/metrics
// and the tops whichever replica the node heartbeats.
type HeldNodeMetrics struct {
	// Node is the node's id.
	Node string `json:"node"`
	// ReceivedAt is when the heartbeat arrived at the holding replica: of
	// two replicas' samples for a node, the newer wins.
	ReceivedAt time.Time   `json:"received_at"`
	VMs        []VMMetrics `json:"vms"`
	// Omitted is how many samples the agent left out (caps, budget).
	Omitted int `json:"omitted,omitempty"`
}

// HeldNodeMetricsList answers GET /v1/cluster/node-metrics.
type HeldNodeMetricsList struct {
	// Replica is the answering replica's name.
	Replica string            `json:"replica"`
	Items   []HeldNodeMetrics `json:"items"`
}
