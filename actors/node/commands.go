package node

import (
	"time"

	"github.com/otherix/otherix/messages"
)

// Heartbeat reports one agent's observed state, received at Now. The caller
// has authenticated the agent already.
type Heartbeat struct {
	Observed messages.Heartbeat
	Now      time.Time
	// Fingerprint is the certificate the agent presented. Once it is the
	// node's current one, the certificate a renewal replaced stops being
	// accepted.
	Fingerprint string
	// Supernet is the settings' overlay supernet as the heartbeat saw it; a
	// tunnel address outside it (the settings moved it) is re-allocated.
	// Empty: not checked.
	Supernet string
}

// RenewCert records a renewed certificate. Presented, the certificate the
// renewal was asked with, stays accepted until the agent presents the new
// one, so an answer lost on the way never locks the node out.
type RenewCert struct {
	Presented   string
	Fingerprint string
	NotAfter    time.Time
	Now         time.Time
}

// CheckLiveness asks the actor to demote its node if heartbeats stopped:
// ready → unreachable after MissedIntervals intervals, unreachable → gone
// after the gone period since the last heartbeat.
type CheckLiveness struct {
	Now time.Time
	// Since, when later than the last heartbeat, is where silence is
	// counted from instead: when this replica last regained quorum (it
	// refused every heartbeat while it had none, and agents that could
	// reach no other replica could not be heard), or when it took over the
	// loop. Zero: from the last heartbeat.
	Since time.Time
}

// Get asks for the node with its in-memory status merged.
type Get struct{}

// SetCordoned cordons or uncordons the node.
type SetCordoned struct {
	Cordoned bool
	Now      time.Time
}

// Delete removes the node's row. The caller checks the preconditions (no
// VMs placed on it unless forced).
type Delete struct{}

// GetMetrics asks for the node with the VM samples of its last heartbeat.
type GetMetrics struct{}

// Metrics are the VM samples of a node's last heartbeat, held in the node
// actor's memory only (see metrics.go).
type Metrics struct {
	// ReceivedAt is when the heartbeat arrived; zero when this replica has
	// not received one since it started, or the node stopped beating.
	ReceivedAt time.Time
	// VMs are the samples, busiest first, as the agent sent them.
	VMs []messages.VMMetrics
	// Omitted is how many samples the agent left out (caps, budget).
	Omitted int
}

// Reply answers every command: the node as it is after the command (nil
// after Delete), or the error. GetMetrics also sets Metrics.
type Reply struct {
	Node    *messages.Node
	Metrics *Metrics
	Err     error
}

// MissedIntervals is how many heartbeat intervals may pass without one
// before a ready node becomes unreachable.
const MissedIntervals = 3
