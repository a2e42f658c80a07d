//go:build etcd

package gateway

import (
	"context"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/system"
)

// Test hooks. They live in a _test file, so production builds carry none.

// VMActorRunning reports whether the actor of VM id is alive (not passivated).
func (g *Gateway) VMActorRunning(id string) bool {
	_, ok := g.rt.System.ProcessRegistry.GetLocal(g.vms.Id + "/vm-" + id)
	return ok
}

// CrashVMForTest makes the actor of VM id panic, as a failure in its work would.
func (g *Gateway) CrashVMForTest(id string) {
	g.rt.System.Root.Send(g.vms, system.Deliver{ID: id, Msg: system.Crashed{Reason: "test"}})
}

// ActorSystem exposes the actor system, for its event stream.
func (g *Gateway) ActorSystem() *actor.ActorSystem { return g.rt.System }

// JWTVerifiesForTest counts access-token signature checks (cache misses).
func (g *Gateway) JWTVerifiesForTest() int64 { return g.id.jwtVerifies.Load() }

// APITokenReadsForTest counts API token reads from etcd.
func (g *Gateway) APITokenReadsForTest() int64 { return g.id.tokenReads.Load() }

// CheckNodesForTest runs one pass of the liveness loop and waits for it.
func (g *Gateway) CheckNodesForTest(ctx context.Context) error { return g.checkNodes(ctx) }

// ExpireOverlayViewForTest makes the next heartbeat rebuild the overlay view
// instead of waiting out its TTL.
func (g *Gateway) ExpireOverlayViewForTest() { g.ov.expire() }
