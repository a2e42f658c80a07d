package gateway

import (
	"context"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// GetTask returns a task inside the owner scope ("" for any owner).
func (g *Gateway) GetTask(ctx context.Context, owner, id string) (*messages.Task, error) {
	if !messages.ValidID(id) {
		return nil, messages.NotFound("task", id)
	}
	task, err := g.st.GetTask(ctx, id)
	if err != nil {
		return nil, err
	}
	if !visible(owner, task.Owner) {
		return nil, messages.OutOfScope("task", id)
	}
	return task, nil
}

// WaitTask returns once the task is terminal or ctx ends.
func (g *Gateway) WaitTask(ctx context.Context, owner, id string) (*messages.Task, error) {
	if _, err := g.GetTask(ctx, owner, id); err != nil {
		return nil, err
	}
	return g.st.WaitTask(ctx, id)
}

// ListTasks lists the tasks in scope (owner's, or every task for ""), oldest
// first.
func (g *Gateway) ListTasks(ctx context.Context, owner string, page store.Page) ([]*messages.Task, string, error) {
	if owner == "" {
		return store.List[messages.Task](ctx, g.st, store.Tasks, page)
	}
	return store.ListIndexed[messages.Task](ctx, g.st, store.Tasks, store.TaskOwnerIndex(owner), page)
}

// CancelTask cancels a pending task through the actor of its target, which
// also puts the target back into a consistent state.
func (g *Gateway) CancelTask(ctx context.Context, owner, id string) (*messages.Task, error) {
	task, err := g.GetTask(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	if messages.Terminal(task.State) {
		return nil, messages.ErrTaskTerminal
	}
	if task.State != messages.TaskPending {
		return nil, messages.ErrTaskNotPending
	}
	reply, err := g.askVM(ctx, task.Target.ID, messages.CancelVMTask{TaskID: id})
	if err != nil {
		return nil, err
	}
	return reply.Task, nil
}

// ReserveIdempotency reserves an Idempotency-Key for one attempt of a
// write, or answers the key's record (store.ReserveIdempotency).
func (g *Gateway) ReserveIdempotency(ctx context.Context, scope, key, hash string, expireAfter time.Duration) (store.Hold, *store.IdempotencyRecord, error) {
	return g.st.ReserveIdempotencyHold(ctx, scope, key, hash, expireAfter)
}
