package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/otherix/otherix/messages"
)

// Dispatcher is one replica's identity in the job queue. Its claims are keys
// bound to its etcd lease: while the replica lives it keeps the lease alive;
// when it dies the lease expires, the claim keys vanish and other dispatchers
// (or the same replica after a restart) can claim the jobs again.
type Dispatcher struct {
	s       *Store
	owner   string
	session *concurrency.Session
}

// NewDispatcher opens a lease with the given TTL, kept alive until Close.
func (s *Store) NewDispatcher(ctx context.Context, owner string, ttl time.Duration) (*Dispatcher, error) {
	secs := int(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(secs), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("store: open dispatcher lease: %w", err)
	}
	return &Dispatcher{s: s, owner: owner, session: sess}, nil
}

// Lease is the etcd lease every claim of this dispatcher is bound to.
func (d *Dispatcher) Lease() clientv3.LeaseID { return d.session.Lease() }

// Done is closed when the lease is lost; the dispatcher then owns no claims.
func (d *Dispatcher) Done() <-chan struct{} { return d.session.Done() }

// Close revokes the lease, releasing every claim at once.
func (d *Dispatcher) Close() error { return d.session.Close() }

// Abandon stops keeping the lease alive without revoking it, as a crashed
// replica would: its claims stay until the lease's TTL runs out.
func (d *Dispatcher) Abandon() { d.session.Orphan() }

// Claim takes a job for this dispatcher and counts the attempt. Exactly one of
// several dispatchers racing for a job wins; the others get ErrClaimLost.
func (d *Dispatcher) Claim(ctx context.Context, j *messages.Job) error {
	claimed := *j
	claimed.Attempts++
	row, err := marshalRow(&claimed)
	if err != nil {
		return err
	}
	resp, err := d.s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(RowKey(Jobs, j.ID)), "=", j.Revision),
		clientv3.Compare(clientv3.CreateRevision(claimKey(j.ID)), "=", 0),
	).Then(
		clientv3.OpPut(RowKey(Jobs, j.ID), row),
		clientv3.OpPut(claimKey(j.ID), d.owner, clientv3.WithLease(d.Lease())),
	).Commit()
	if err != nil {
		return unavailable(err)
	}
	if !resp.Succeeded {
		return messages.ErrClaimLost
	}
	*j = claimed
	j.Revision = resp.Header.Revision
	return nil
}

// Unclaim drops this dispatcher's claim on a job if it holds it, and only
// then: a claim whose call failed with an unknown outcome (a lost quorum
// cut it, the transaction still committed) would otherwise sit on this
// dispatcher's live lease with nobody running the job.
func (d *Dispatcher) Unclaim(ctx context.Context, jobID string) error {
	k := claimKey(jobID)
	if _, err := d.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(k), "=", d.Lease())).
		Then(clientv3.OpDelete(k)).Commit(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Holds reports whether this dispatcher still holds the claim on a job.
func (d *Dispatcher) Holds(ctx context.Context, jobID string) (bool, error) {
	resp, err := d.s.cli.Get(ctx, claimKey(jobID))
	if err != nil {
		return false, unavailable(err)
	}
	return len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) == d.Lease(), nil
}

// RequireClaim adds to t the precondition that this dispatcher still holds the
// job, so a dispatcher whose claim was lost and re-taken cannot change it.
func RequireClaim(t *Txn, lease clientv3.LeaseID, jobID string) *Txn {
	return t.RequireLease(claimKey(jobID), lease, messages.ErrClaimLost)
}

// FinishJob adds to t the end of a job: the task written in its terminal state,
// the job row and its claim removed. The caller adds the entity's own changes
// so that they and the task's outcome commit together.
func FinishJob(t *Txn, lease clientv3.LeaseID, j *messages.Job, task *messages.Task) *Txn {
	RequireClaim(t, lease, j.ID)
	t.Update(Tasks, task)
	t.Delete(Jobs, j)
	t.DeleteKey(claimKey(j.ID))
	return t
}

// Retry releases a job after a failed attempt; it becomes claimable again after
// backoff. The task stays pending so the user sees the job is being retried.
func (d *Dispatcher) Retry(ctx context.Context, j *messages.Job, task *messages.Task, cause string, backoff time.Duration) error {
	next := *j
	next.LastError = cause
	next.NotBefore = d.s.now().Add(backoff)
	t := ReleaseJob(NewTxn(), d.Lease(), &next)
	if task != nil {
		t.Update(Tasks, task)
	}
	if err := d.s.Commit(ctx, t); err != nil {
		return err
	}
	*j = next
	return nil
}

// ReleaseJob adds to t the release of a job after a failed attempt while
// lease holds it: next (the job with its cause and backoff) is written and
// the claim dropped, so the job is claimable again once next.NotBefore
// passes. The caller adds the task's own change.
func ReleaseJob(t *Txn, lease clientv3.LeaseID, next *messages.Job) *Txn {
	RequireClaim(t, lease, next.ID)
	t.Update(Jobs, next)
	t.DeleteKey(claimKey(next.ID))
	return t
}

// ProgressTask adds to t a write of a running job's task, valid only while
// lease still holds the job's claim.
func ProgressTask(t *Txn, lease clientv3.LeaseID, jobID string, task *messages.Task) *Txn {
	RequireClaim(t, lease, jobID)
	t.Update(Tasks, task)
	return t
}

// Drop removes a job whose task already ended (a crash between the two
// writes, or a cancel that raced the claim); the task is left untouched.
func (d *Dispatcher) Drop(ctx context.Context, j *messages.Job) error {
	t := NewTxn()
	RequireClaim(t, d.Lease(), j.ID)
	t.DeleteKey(RowKey(Jobs, j.ID))
	t.DeleteKey(claimKey(j.ID))
	return d.s.Commit(ctx, t)
}

// JobSnapshot is every job and every held claim at one revision: the start of
// a dispatcher's in-memory view, which WatchJobs then keeps current.
type JobSnapshot struct {
	Jobs     []*messages.Job
	Claimed  []string
	Revision int64
}

// LoadJobs reads all jobs and claims at one revision.
func (s *Store) LoadJobs(ctx context.Context) (JobSnapshot, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(RowPrefix(Jobs), clientv3.WithPrefix()),
		clientv3.OpGet(RowPrefix(claims), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return JobSnapshot{}, unavailable(err)
	}
	snap := JobSnapshot{Revision: resp.Header.Revision}
	for _, k := range resp.Responses[0].GetResponseRange().Kvs {
		j, err := decode[messages.Job](k.Value, k.ModRevision)
		if err != nil {
			return JobSnapshot{}, err
		}
		snap.Jobs = append(snap.Jobs, j)
	}
	for _, k := range resp.Responses[1].GetResponseRange().Kvs {
		snap.Claimed = append(snap.Claimed, lastSegment(string(k.Key)))
	}
	return snap, nil
}

// JobEvent is one change to the job queue. For a job row, Job is the new row or
// nil when it was deleted; for a claim key, Claim is set and Claimed says
// whether the claim now exists.
type JobEvent struct {
	JobID   string
	Job     *messages.Job
	Claim   bool
	Claimed bool
}

// WatchJobs streams job and claim changes after revision from to fn, in
// batches, until ctx ends or the watch fails (for instance because the
// revision was compacted: the caller then loads a fresh snapshot).
func (s *Store) WatchJobs(ctx context.Context, from int64, fn func([]JobEvent)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	jobs := s.cli.Watch(wctx, RowPrefix(Jobs), clientv3.WithPrefix(), clientv3.WithRev(from+1))
	claimed := s.cli.Watch(wctx, RowPrefix(claims), clientv3.WithPrefix(), clientv3.WithRev(from+1))
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok = <-jobs:
		case wr, ok = <-claimed:
		}
		if !ok {
			return fmt.Errorf("store: job watch closed")
		}
		if err := wr.Err(); err != nil {
			return unavailable(err)
		}
		events := make([]JobEvent, 0, len(wr.Events))
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			e := JobEvent{JobID: lastSegment(key)}
			switch {
			case strings.HasPrefix(key, RowPrefix(claims)):
				e.Claim, e.Claimed = true, ev.Type == clientv3.EventTypePut
			case ev.Type == clientv3.EventTypePut:
				j, err := decode[messages.Job](ev.Kv.Value, ev.Kv.ModRevision)
				if err != nil {
					return err
				}
				e.Job = j
			}
			events = append(events, e)
		}
		if len(events) > 0 {
			fn(events)
		}
	}
}
