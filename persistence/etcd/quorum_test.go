//go:build etcd

package etcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// TestQuorumFollowsTheLeader: a member of three whose two peers stop (hard,
// as a crash or a partition looks to it) sees its quorum lost within
// etcd's election timeouts: HasQuorum turns false, the QuorumContext it
// handed out ends with cause ErrNoQuorum, QuorumEpoch says none. With one
// peer back it regains it by itself under a new epoch.
func TestQuorumFollowsTheLeader(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	c.join(a, "b")
	c.join(a, "c")
	promote(t, a)
	promote(t, a)
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "a knows a leader", a.HasQuorum)
	var qctx context.Context
	testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "a quorum context", func() bool {
		var ok bool
		qctx, ok = a.QuorumContext()
		return ok
	})
	epoch, _, ok := a.QuorumEpoch()
	if !ok || epoch == 0 {
		t.Fatalf("epoch %d %v with a leader", epoch, ok)
	}
	start := time.Now()
	for _, n := range []string{"b", "c"} {
		c.byName[n].server.Server.HardStop()
	}
	select {
	case <-qctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the quorum context did not end 10 s after both peers stopped")
	}
	lost := time.Since(start)
	t.Logf("measure: quorum loss seen %s after both peers stopped", lost.Round(time.Millisecond))
	if !errors.Is(context.Cause(qctx), ErrNoQuorum) {
		t.Fatalf("cause %v, want ErrNoQuorum", context.Cause(qctx))
	}
	if a.HasQuorum() {
		t.Fatal("HasQuorum after the loss")
	}
	if _, ok := a.QuorumContext(); ok {
		t.Fatal("a quorum context handed out without a leader")
	}
	if _, _, ok := a.QuorumEpoch(); ok {
		t.Fatal("QuorumEpoch ok without a leader")
	}
	c.close("b")
	c.close("c")
	c.start(c.byName2cfg["b"])
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "a regains quorum", func() bool {
		e, _, ok := a.QuorumEpoch()
		return ok && e > epoch
	})
	if q, ok := a.QuorumContext(); !ok || q.Err() != nil {
		t.Fatalf("quorum context after the regain: %v %v", ok, q.Err())
	}
}
