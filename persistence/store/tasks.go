package store

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// TaskOwnerIndex is the index sort key that lists one owner's tasks.
func TaskOwnerIndex(owner string) string { return "owner/" + owner }

// GetTask loads a task.
func (s *Store) GetTask(ctx context.Context, id string) (*messages.Task, error) {
	return Get[messages.Task](ctx, s, Tasks, id)
}

// GetJob loads a job.
func (s *Store) GetJob(ctx context.Context, id string) (*messages.Job, error) {
	return Get[messages.Job](ctx, s, Jobs, id)
}

// AddTask adds a new task and its job to t, with the task indexed under its owner.
func AddTask(t *Txn, task *messages.Task, j *messages.Job) *Txn {
	t.Create(Tasks, task)
	t.AddIndex(Tasks, TaskOwnerIndex(task.Owner), task.ID)
	if j != nil {
		t.Create(Jobs, j)
	}
	return t
}

// CheckTransition refuses a task state change that would reopen a finished task.
func CheckTransition(task *messages.Task, to string) error {
	if messages.Terminal(task.State) {
		return messages.ErrTaskTerminal
	}
	if !messages.CanTransition(task.State, to) {
		return messages.Errorf(messages.KindConflict, "task_transition_invalid", "task %s cannot move from %s to %s", task.ID, task.State, to)
	}
	return nil
}

// CancelJob adds to t the removal of a pending task's job and any claim on it;
// a dispatcher working on it then fails its next write and stops.
func CancelJob(t *Txn, jobID string) *Txn {
	t.DeleteKey(RowKey(Jobs, jobID))
	t.DeleteKey(claimKey(jobID))
	return t
}

// WaitTask returns the task once it is terminal or ctx ends, whichever comes
// first; on ctx end it returns the latest state seen. It watches etcd instead
// of polling, so the caller hears of completion at once.
func (s *Store) WaitTask(ctx context.Context, id string) (*messages.Task, error) {
	task, err := s.GetTask(ctx, id)
	if err != nil || messages.Terminal(task.State) {
		return task, err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, RowKey(Tasks, id), clientv3.WithRev(task.Revision+1))
	for {
		select {
		case <-ctx.Done():
			return task, nil
		case wr, ok := <-wch:
			if !ok {
				return task, nil
			}
			if wr.Err() != nil {
				// The watched revision was compacted, or the watch broke:
				// answer with the task as it is now; callers poll again.
				return s.GetTask(ctx, id)
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return task, nil
				}
				next, err := decode[messages.Task](ev.Kv.Value, ev.Kv.ModRevision)
				if err != nil {
					return nil, err
				}
				task = next
				if messages.Terminal(task.State) {
					return task, nil
				}
			}
		}
	}
}

// SweepFinishedTasks removes terminal tasks that finished before the retention
// window, with their index keys, in chunked transactions. It returns how many
// it removed.
func (s *Store) SweepFinishedTasks(ctx context.Context, retention time.Duration) (int, error) {
	cutoff := s.now().Add(-retention)
	return s.Sweep(ctx, RowPrefix(Tasks), func(it SweepItem) []clientv3.Op {
		var task messages.Task
		if json.Unmarshal(it.Value, &task) != nil {
			return nil
		}
		if !messages.Terminal(task.State) || task.FinishedAt == nil || task.FinishedAt.After(cutoff) {
			return nil
		}
		ops := []clientv3.Op{
			clientv3.OpDelete(it.Key),
			clientv3.OpDelete(IndexKey(Tasks, TaskOwnerIndex(task.Owner), task.ID)),
		}
		if task.JobID != "" {
			ops = append(ops, clientv3.OpDelete(RowKey(Jobs, task.JobID)), clientv3.OpDelete(claimKey(task.JobID)))
		}
		return ops
	})
}

// SweepOrphanJobs removes jobs whose task is gone or already terminal; they can
// be left by an interrupted cleanup. Each removal is guarded by the job's
// revision so a job that moved on meanwhile is left alone.
func (s *Store) SweepOrphanJobs(ctx context.Context) (int, error) {
	resp, err := s.cli.Get(ctx, RowPrefix(Jobs), clientv3.WithPrefix())
	if err != nil {
		return 0, unavailable(err)
	}
	removed := 0
	for _, k := range resp.Kvs {
		var j messages.Job
		if json.Unmarshal(k.Value, &j) != nil {
			continue
		}
		task, err := s.GetTask(ctx, j.TaskID)
		if err != nil && messages.KindOf(err) != messages.KindNotFound {
			return removed, err
		}
		if err == nil && !messages.Terminal(task.State) {
			continue
		}
		n, err := s.applyGroups(ctx, []group{{
			cmp: clientv3.Compare(clientv3.ModRevision(string(k.Key)), "=", k.ModRevision),
			ops: []clientv3.Op{clientv3.OpDelete(string(k.Key)), clientv3.OpDelete(claimKey(j.ID))},
		}})
		if err != nil {
			return removed, err
		}
		removed += n
	}
	return removed, nil
}
