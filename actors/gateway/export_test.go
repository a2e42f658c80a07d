//go:build etcd

package gateway

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/actors/node"
	"github.com/otherix/otherix/actors/system"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
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

// CheckNodesForTest runs one pass of the liveness loop and waits for it.
// The pass only tells each node's actor; a Get to each afterwards is
// answered only once the check before it in the actor's queue is done.
func (g *Gateway) CheckNodesForTest(ctx context.Context) error {
	if err := g.checkNodes(ctx); err != nil {
		return err
	}
	page := store.Page{Limit: 500}
	for {
		ids, next, err := g.st.NodeIDs(ctx, page)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := g.askNode(id, node.Get{}); err != nil && messages.KindOf(err) != messages.KindNotFound {
				return err
			}
		}
		if next == "" {
			return nil
		}
		page.Cursor = next
	}
}

// ExpireOverlayViewForTest makes the next heartbeat rebuild the overlay view
// instead of waiting out its TTL.
func (g *Gateway) ExpireOverlayViewForTest() { g.ov.expire() }

// FailureWindowsForTest is the number of open failure-audit windows.
func (g *Gateway) FailureWindowsForTest() int { return g.id.FailureWindows() }

// SetLivenessWallClockForTest replaces the wall clock the liveness loop
// measures the gap between its passes with.
func (g *Gateway) SetLivenessWallClockForTest(now func() time.Time) {
	g.live.mu.Lock()
	defer g.live.mu.Unlock()
	g.live.wall = now
}
