//go:build etcd

package store_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// addJob commits a pending task and its job, claimable from notBefore.
func addJob(t *testing.T, s *store.Store, notBefore time.Time) (*messages.Task, *messages.Job) {
	t.Helper()
	task, job := newTask("alice", messages.TaskPending, s.Now())
	job.NotBefore = notBefore
	if err := s.Commit(t.Context(), store.AddTask(store.NewTxn(), task, job)); err != nil {
		t.Fatal(err)
	}
	return task, job
}

func newDispatcher(t *testing.T, s *store.Store, owner string, ttl time.Duration) *store.Dispatcher {
	t.Helper()
	d, err := s.NewDispatcher(t.Context(), owner, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// claimable is the dispatcher's view of ready work, from the snapshot it loads:
// jobs nobody holds whose backoff has passed, oldest first.
func claimable(t *testing.T, s *store.Store) []*messages.Job {
	t.Helper()
	snap, err := s.LoadJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	now := s.Now()
	var out []*messages.Job
	for _, j := range snap.Jobs {
		if !slices.Contains(snap.Claimed, j.ID) && !j.NotBefore.After(now) {
			out = append(out, j)
		}
	}
	return out
}

// jobRow is a job as stored, claimed or not.
func jobRow(t *testing.T, s *store.Store, id string) *messages.Job {
	t.Helper()
	snap, err := s.LoadJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range snap.Jobs {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("job %s not stored", id)
	return nil
}

func claimableIDs(t *testing.T, s *store.Store) []string {
	t.Helper()
	var ids []string
	for _, j := range claimable(t, s) {
		ids = append(ids, j.ID)
	}
	return ids
}

func findJob(t *testing.T, s *store.Store, id string) *messages.Job {
	t.Helper()
	for _, j := range claimable(t, s) {
		if j.ID == id {
			return j
		}
	}
	return nil
}

func TestClaimRace(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	a := newDispatcher(t, s, "replica-a", 10*time.Second)
	b := newDispatcher(t, s, "replica-b", 10*time.Second)
	const rounds = 20
	var ids []string
	for range rounds {
		_, j := addJob(t, s, s.Now())
		ids = append(ids, j.ID)
	}
	jobs := claimable(t, s)
	if len(jobs) != rounds {
		t.Fatalf("claimable = %d; want %d", len(jobs), rounds)
	}
	for _, j := range jobs {
		// Both dispatchers read the job at the same revision and race for it.
		ja, jb := *j, *j
		var errA, errB error
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); <-start; errA = a.Claim(ctx, &ja) }()
		go func() { defer wg.Done(); <-start; errB = b.Claim(ctx, &jb) }()
		close(start)
		wg.Wait()

		winner, loser, lostErr := a, b, errB
		switch {
		case errA == nil && errB == nil:
			t.Fatalf("job %s claimed by both dispatchers", j.ID)
		case errA != nil && errB != nil:
			t.Fatalf("job %s claimed by neither: %v / %v", j.ID, errA, errB)
		case errA != nil:
			winner, loser, lostErr = b, a, errA
		}
		if !errors.Is(lostErr, messages.ErrClaimLost) {
			t.Fatalf("loser's error = %v, want ErrClaimLost", lostErr)
		}
		if held, err := winner.Holds(ctx, j.ID); err != nil || !held {
			t.Errorf("winner does not hold job %s: %v", j.ID, err)
		}
		if held, _ := loser.Holds(ctx, j.ID); held {
			t.Errorf("loser holds job %s", j.ID)
		}
		row, err := s.GetJob(ctx, j.ID)
		if err != nil || row.Attempts != 1 {
			t.Errorf("job %s attempts = %v (%v), want exactly one counted", j.ID, row, err)
		}
	}
	for _, id := range claimableIDs(t, s) {
		if slices.Contains(ids, id) {
			t.Errorf("claimed job %s is still claimable", id)
		}
	}
}

func TestLeaseExpiryAndReclaim(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	a := newDispatcher(t, s, "replica-a", time.Second) // etcd raises it to its minimum TTL (2s here)
	b := newDispatcher(t, s, "replica-b", 10*time.Second)
	task, job := addJob(t, s, s.Now())

	ja := findJob(t, s, job.ID)
	if ja == nil {
		t.Fatal("new job is not claimable")
	}
	if err := a.Claim(ctx, ja); err != nil {
		t.Fatal(err)
	}
	a.Abandon() // the replica "crashes": no revoke, no more keepalives
	// The claim outlives the crash until the lease runs out.
	if findJob(t, s, job.ID) != nil {
		t.Fatal("abandoned claim was released at once instead of at lease expiry")
	}

	start := time.Now()
	var jb *messages.Job
	if !testutil.Until(20*time.Second, 10*time.Millisecond, func() bool {
		jb = findJob(t, s, job.ID)
		return jb != nil && b.Claim(ctx, jb) == nil
	}) {
		t.Fatal("job was not reclaimable after the dead dispatcher's lease expired")
	}
	t.Logf("reclaimed %s after the lease expired", time.Since(start).Round(100*time.Millisecond))
	if jb.Attempts != 2 {
		t.Errorf("attempts after reclaim = %d, want 2", jb.Attempts)
	}

	// The dead dispatcher comes back and tries to record an outcome: refused.
	done := *task
	now := s.Now()
	done.State, done.FinishedAt = messages.TaskSuccess, &now
	err := s.Commit(ctx, store.FinishJob(store.NewTxn(), a.Lease(), ja, &done))
	if !errors.Is(err, messages.ErrClaimLost) {
		t.Fatalf("finish by the expired owner: %v, want ErrClaimLost", err)
	}
	if err := s.Commit(ctx, store.ProgressTask(store.NewTxn(), a.Lease(), ja.ID, task)); !errors.Is(err, messages.ErrClaimLost) {
		t.Errorf("progress by the expired owner: %v, want ErrClaimLost", err)
	}
	got, err := s.GetTask(ctx, task.ID)
	if err != nil || got.State != messages.TaskPending {
		t.Errorf("task after refused finish = %+v, %v; want pending", got, err)
	}
	if held, _ := b.Holds(ctx, job.ID); !held {
		t.Error("the new owner lost the job to a refused finish")
	}

	// The new owner can finish it: task terminal, job and claim gone.
	if err := s.Commit(ctx, store.FinishJob(store.NewTxn(), b.Lease(), jb, &done)); err != nil {
		t.Fatalf("finish by the new owner: %v", err)
	}
	if _, err := s.GetJob(ctx, job.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("job after finish: %v, want not found", err)
	}
	if held, _ := b.Holds(ctx, job.ID); held {
		t.Error("claim survived the finish")
	}
}

func TestRetryBackoff(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	d := newDispatcher(t, s, "replica-a", 10*time.Second)
	task, job := addJob(t, s, clk.Now())

	j := findJob(t, s, job.ID)
	if j == nil {
		t.Fatal("job not claimable")
	}
	if err := d.Claim(ctx, j); err != nil {
		t.Fatal(err)
	}
	task.Message = "attempt 1 failed; retrying"
	if err := d.Retry(ctx, j, task, "no node", 10*time.Minute); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if held, _ := d.Holds(ctx, job.ID); held {
		t.Error("retry kept the claim")
	}
	if findJob(t, s, job.ID) != nil {
		t.Fatal("job is claimable during its backoff")
	}
	if next := jobRow(t, s, job.ID).NotBefore; !next.Equal(clk.Now().Add(10 * time.Minute)) {
		t.Errorf("next wakeup = %v; want now+10m", next)
	}
	clk.Add(9 * time.Minute)
	if findJob(t, s, job.ID) != nil {
		t.Fatal("job is claimable before its backoff passed")
	}
	clk.Add(2 * time.Minute)
	j = findJob(t, s, job.ID)
	if j == nil {
		t.Fatal("job not claimable after its backoff passed")
	}
	if j.Attempts != 1 || j.LastError != "no node" {
		t.Errorf("job after retry = attempts %d, last error %q", j.Attempts, j.LastError)
	}
	got, err := s.GetTask(ctx, task.ID)
	if err != nil || got.State != messages.TaskPending || got.Message != task.Message {
		t.Errorf("task after retry = %+v, %v; want pending with the retry message", got, err)
	}
	if err := d.Claim(ctx, j); err != nil || j.Attempts != 2 {
		t.Errorf("second claim = %v, attempts %d; want 2", err, j.Attempts)
	}
}

func TestCancelJobStopsItsDispatcher(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	d := newDispatcher(t, s, "replica-a", 10*time.Second)
	task, job := addJob(t, s, s.Now())
	j := findJob(t, s, job.ID)
	if err := d.Claim(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := store.CheckTransition(task, messages.TaskCancelled); err != nil {
		t.Fatal(err)
	}
	now := s.Now()
	task.State, task.FinishedAt = messages.TaskCancelled, &now
	txn := store.NewTxn().Update(store.Tasks, task)
	if err := s.Commit(ctx, store.CancelJob(txn, job.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetJob(ctx, job.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Errorf("job after cancel: %v, want not found", err)
	}
	if err := s.Commit(ctx, store.ProgressTask(store.NewTxn(), d.Lease(), j.ID, task)); !errors.Is(err, messages.ErrClaimLost) {
		t.Errorf("dispatcher write after cancel: %v, want ErrClaimLost", err)
	}
}

func TestTaskTransitions(t *testing.T) {
	all := []string{messages.TaskPending, messages.TaskRunning, messages.TaskSuccess, messages.TaskFailed, messages.TaskCancelled}
	terminal := []string{messages.TaskSuccess, messages.TaskFailed, messages.TaskCancelled}
	for _, from := range terminal {
		for _, to := range all {
			err := store.CheckTransition(&messages.Task{ID: "t", State: from}, to)
			if !errors.Is(err, messages.ErrTaskTerminal) {
				t.Errorf("%s -> %s: %v, want ErrTaskTerminal", from, to, err)
			}
		}
	}
	allowed := map[[2]string]bool{
		{messages.TaskPending, messages.TaskPending}: true, {messages.TaskPending, messages.TaskRunning}: true,
		{messages.TaskRunning, messages.TaskRunning}: true,
	}
	for _, to := range terminal {
		allowed[[2]string{messages.TaskPending, to}] = true
		allowed[[2]string{messages.TaskRunning, to}] = true
	}
	for _, from := range []string{messages.TaskPending, messages.TaskRunning} {
		for _, to := range all {
			err := store.CheckTransition(&messages.Task{ID: "t", State: from}, to)
			if allowed[[2]string{from, to}] {
				if err != nil {
					t.Errorf("%s -> %s refused: %v", from, to, err)
				}
				continue
			}
			var e *messages.Error
			if !errors.As(err, &e) || e.Code != "task_transition_invalid" {
				t.Errorf("%s -> %s: %v, want task_transition_invalid", from, to, err)
			}
		}
	}
}

// TestUnclaimOnlyOwnClaim: a dispatcher whose claim call failed with an
// unknown outcome drops the claim if it holds it, and never another
// dispatcher's.
func TestUnclaimOnlyOwnClaim(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	a := newDispatcher(t, s, "replica-a", 10*time.Second)
	b := newDispatcher(t, s, "replica-b", 10*time.Second)
	addJob(t, s, s.Now())
	j := claimable(t, s)[0]
	if err := a.Claim(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := b.Unclaim(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if held, err := a.Holds(ctx, j.ID); err != nil || !held {
		t.Fatalf("another dispatcher's unclaim dropped a's claim: %v %v", held, err)
	}
	if err := a.Unclaim(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if held, err := a.Holds(ctx, j.ID); err != nil || held {
		t.Fatalf("a still holds the job after its unclaim: %v %v", held, err)
	}
	if len(claimable(t, s)) != 1 {
		t.Fatal("the unclaimed job is not claimable again")
	}
}
