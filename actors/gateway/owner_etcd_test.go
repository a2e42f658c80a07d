//go:build etcd

package gateway_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/actors/maintenance"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/election"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/etcdtest"
	"github.com/otherix/otherix/persistence/store"
)

// ownedReplica is one control plane of a three-replica cluster: its
// gateway, its campaign for the loops, and the backups it took.
type ownedReplica struct {
	name    string
	dir     string
	loops   *election.Loops
	stop    context.CancelFunc
	done    chan struct{}
	backups atomic.Int32
	// unowned counts backups that ended while this replica did not own
	// the loops.
	unowned atomic.Int32
}

func (r *ownedReplica) campaign() {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		r.loops.Run(ctx)
	}()
}

func (r *ownedReplica) resign() {
	r.stop()
	<-r.done
}

func (r *ownedReplica) snapshots(t *testing.T) int {
	t.Helper()
	s, err := etcd.Snapshots(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(s)
}

// TestBackupsOnlyByLoopOwner: three replicas, each with its gateway and its
// backup dir, all configured to back up every 100ms. Only the loop owner
// takes backups; when it resigns (its gateway still running) another replica
// takes over the backups and the first takes none any more.
func TestBackupsOnlyByLoopOwner(t *testing.T) {
	c := etcdtest.Start3(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	reps := map[string]*ownedReplica{}
	for i, name := range c.Names() {
		m := c.Member(name)
		st := store.New(m.Client(), store.WithMaxTxnOps(m.MaxTxnOps()))
		if i == 0 {
			if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
				t.Fatal(err)
			}
		}
		r := &ownedReplica{name: name, dir: filepath.Join(c.Dir(), "backups-"+name)}
		r.loops = election.New(election.Config{Client: m.Client(), Name: name, TTL: 3 * time.Second, Log: log})
		g, err := gateway.Start(ctx, st, gateway.Config{Replica: name, Loops: r.loops, CleanupInterval: time.Hour,
			BackupDir: r.dir, BackupInterval: 100 * time.Millisecond, BackupKeep: 1000, Snapshot: m.Snapshot, Prune: etcd.PruneSnapshots,
			OnMaintenance: func(ran maintenance.Ran) {
				if ran.Loop != "backup" || ran.Err != nil {
					return
				}
				r.backups.Add(1)
				if !r.loops.Owner() {
					r.unowned.Add(1)
				}
			}}, log)
		if err != nil {
			t.Fatalf("start gateway %s: %v", name, err)
		}
		t.Cleanup(g.Close)
		mu.Lock()
		reps[name] = r
		mu.Unlock()
	}
	for _, r := range reps {
		r.campaign()
		t.Cleanup(func() {
			r.stop()
			<-r.done
		})
	}
	owner := func() *ownedReplica {
		var o *ownedReplica
		testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "one replica taking backups", func() bool {
			for _, r := range reps {
				if r.loops.Owner() && r.backups.Load() >= 3 {
					o = r
					return true
				}
			}
			return false
		})
		return o
	}
	first := owner()
	for _, r := range reps {
		if r != first && (r.backups.Load() != 0 || r.snapshots(t) != 0) {
			t.Fatalf("%s took %d backups (%d files) while %s owned the loops", r.name, r.backups.Load(), r.snapshots(t), first.name)
		}
	}

	first.resign()
	before := first.backups.Load()
	beforeFiles := first.snapshots(t)
	second := owner()
	if second == first {
		t.Fatal("the replica that resigned still takes backups")
	}
	// A few of the new owner's backup periods: the first takes none.
	n := second.backups.Load()
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "more backups by the new owner", func() bool { return second.backups.Load() >= n+3 })
	if got := first.backups.Load(); got != before || first.snapshots(t) != beforeFiles {
		t.Fatalf("%s took backups after resigning: %d → %d runs, %d → %d files", first.name, before, got, beforeFiles, first.snapshots(t))
	}
	for _, r := range reps {
		if u := r.unowned.Load(); u != 0 {
			t.Errorf("%s finished %d backups while not owning the loops", r.name, u)
		}
		t.Logf("%s: %d backups", r.name, r.backups.Load())
	}
}
