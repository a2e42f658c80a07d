//go:build etcd

package etcd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// TestRemoveMembers removes, from a cluster of three voters: a learner that
// never started; a healthy voter while another is down (refused); the down
// voter, which restarted finds itself removed; a running voter, which stops
// by itself and says why; and refuses the last voter and an unknown id.
func TestRemoveMembers(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	c.join(a, "b")
	cm := c.join(a, "c")
	promote(t, a)
	promote(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ghost, _, err := a.AddLearner(ctx, "ghost", peerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if mi := roles(t, a)[""]; mi.ID != ghost || mi.Role != RoleLearner {
		t.Fatalf("never-started learner listed as %+v", mi)
	}
	if err := a.Remove(ctx, ghost, false); err != nil {
		t.Fatalf("remove the never-started learner: %v", err)
	}
	if _, ok := roles(t, a)[""]; ok {
		t.Fatal("the never-started learner is still listed")
	}

	bID := c.byName["b"].ID()
	c.close("b")
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "b unhealthy", func() bool { return !roles(t, a)["b"].Healthy })
	var qe *QuorumError
	if err := a.Remove(ctx, cm.ID(), false); !errors.As(err, &qe) || qe.Voters != 2 || qe.Healthy != 1 || qe.Needed != 2 {
		t.Fatalf("remove a healthy voter while another is down = %v, want quorum at risk (2 voters, 1 healthy, 2 needed)", err)
	}
	if got := roles(t, a); len(got) != 3 {
		t.Fatalf("a refused removal changed the membership: %+v", got)
	}
	if err := a.Remove(ctx, bID, false); err != nil {
		t.Fatalf("remove the down voter: %v", err)
	}
	if _, err := Start(ctx, c.byName2cfg["b"]); !errors.Is(err, ErrRemoved) {
		t.Fatalf("restart of a removed member = %v, want ErrRemoved", err)
	}

	// c is removed while it runs: it applies its own removal and stops.
	if err := a.Remove(ctx, cm.ID(), false); err != nil {
		t.Fatalf("remove running voter c: %v", err)
	}
	select {
	case <-cm.Stopped():
	case <-time.After(30 * time.Second):
		t.Fatal("removed member c still running")
	}
	if err := cm.StopCause(ctx); !errors.Is(err, ErrRemoved) {
		t.Fatalf("c's stop cause = %v, want ErrRemoved", err)
	}
	// A removed member serves nothing, like a learner; etcd's own
	// IsLearner panics on it, which took down a replica's promoter.
	if !cm.IsLearner() {
		t.Fatal("a removed member is not held back as a learner")
	}
	if name, err := cm.PromoteOne(ctx); name != "" || err != nil {
		t.Fatalf("PromoteOne on a removed member = %q, %v", name, err)
	}
	if _, err := a.Client().Put(ctx, "/otherix/probe", "alone"); err != nil {
		t.Fatalf("write on the one voter left: %v", err)
	}
	if err := a.Remove(ctx, a.ID(), true); !errors.Is(err, ErrLastVoter) {
		t.Fatalf("remove the last voter = %v, want ErrLastVoter", err)
	}
	if err := a.Remove(ctx, 0xdead, false); !errors.Is(err, ErrMemberNotFound) {
		t.Fatalf("remove an unknown id = %v, want ErrMemberNotFound", err)
	}
}

// TestRemoveStaleLearners: a learner added and never started is removed
// once it has been seen without a name for the configured time, not
// before; RunPromoter does it by itself.
func TestRemoveStaleLearners(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ghost, _, err := a.AddLearner(ctx, "ghost", peerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, at := range []time.Time{t0, t0.Add(9 * time.Minute)} {
		if removed, err := a.RemoveStaleLearners(ctx, 10*time.Minute, at); err != nil || len(removed) != 0 {
			t.Fatalf("sweep at +%s = %v, %v; want nothing removed yet", at.Sub(t0), removed, err)
		}
	}
	if removed, err := a.RemoveStaleLearners(ctx, 10*time.Minute, t0.Add(10*time.Minute)); err != nil || len(removed) != 1 || removed[0] != ghost {
		t.Fatalf("sweep after 10 minutes = %v, %v; want %x removed", removed, err, ghost)
	}
	if _, ok := roles(t, a)[""]; ok {
		t.Fatal("stale learner still listed")
	}

	// The loop: a second ghost goes by itself with a short threshold.
	ghost2, _, err := a.AddLearner(ctx, "ghost2", peerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RunPromoter(lctx, PromoterOptions{Interval: 20 * time.Millisecond, StaleLearnerAfter: 100 * time.Millisecond})
	}()
	defer func() { stop(); <-done }()
	testutil.EventuallyReport(t, 30*time.Second, 20*time.Millisecond, "the promoter removed the stale learner", func() (bool, string) {
		got := roles(t, a)
		_, ok := got[""]
		return !ok, fmt.Sprintf("%x still there: %+v", ghost2, got)
	})
}

// TestDataDirClusterID reads a stopped member's cluster id from its log.
func TestDataDirClusterID(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	want := a.ClusterID()
	c.close("a")
	got, err := DataDirClusterID(c.byName2cfg["a"].DataDir)
	if err != nil || got != want || got == 0 {
		t.Fatalf("DataDirClusterID = %x, %v; want %x", got, err, want)
	}
	if _, err := DataDirClusterID(t.TempDir()); err == nil {
		t.Fatal("an empty dir has a cluster id")
	}
}

// TestRemoveSelf: a replica asked to remove itself (the request landed on
// it) succeeds, then stops as removed; the two others carry on.
func TestRemoveSelf(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	b := c.join(a, "b")
	cm := c.join(a, "c")
	promote(t, a)
	promote(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "three healthy voters", func() bool {
		n := 0
		for _, mi := range roles(t, a) {
			if mi.Healthy && mi.Role == RoleVoter {
				n++
			}
		}
		return n == 3
	})
	if err := a.Remove(ctx, a.ID(), false); err != nil {
		t.Fatalf("a removes itself: %v", err)
	}
	select {
	case <-a.Stopped():
	case <-time.After(30 * time.Second):
		t.Fatal("a still running after removing itself")
	}
	if err := a.StopCause(ctx); !errors.Is(err, ErrRemoved) {
		t.Fatalf("a's stop cause = %v", err)
	}
	testutil.EventuallyReport(t, 30*time.Second, 50*time.Millisecond, "b and c write without a", func() (bool, string) {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		_, err := b.Client().Put(wctx, "/otherix/probe", "after")
		return err == nil && len(roles(t, cm)) == 2, fmt.Sprint(err)
	})
}
