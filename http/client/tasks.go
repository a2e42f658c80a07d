package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/otherix/otherix/messages"
)

// DefaultWait is the long-poll window WaitTask uses when given none.
const DefaultWait = 30 * time.Second

// pollMargin is left between a poll's end and ctx's deadline for the answer
// to travel back.
const pollMargin = 100 * time.Millisecond

// maxWait is the server's cap on one long poll.
const maxWait = 60 * time.Second

// GetTask returns a task's current state.
func (c *Client) GetTask(ctx context.Context, id string, opts ...CallOption) (*messages.Task, error) {
	return c.getTask(ctx, id, 0, opts)
}

func (c *Client) getTask(ctx context.Context, id string, wait time.Duration, opts []CallOption) (*messages.Task, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	var t messages.Task
	if _, err := c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), q, nil, &t, opts); err != nil {
		return nil, err
	}
	return &t, nil
}

// WaitTask long-polls a task until it is terminal (success, failed or
// cancelled) or ctx ends; each poll waits up to wait on the server. On ctx's
// end it returns the last state seen with ctx's error.
func (c *Client) WaitTask(ctx context.Context, id string, wait time.Duration, opts ...CallOption) (*messages.Task, error) {
	if wait <= 0 {
		wait = DefaultWait
	}
	wait = min(wait, maxWait)
	var last *messages.Task
	for {
		w := wait
		if dl, ok := ctx.Deadline(); ok {
			// Ask the server to answer before our deadline, so the last
			// state comes back instead of a cancelled request.
			left := time.Until(dl)
			w = min(w, (left - pollMargin).Truncate(time.Millisecond))
			if last == nil {
				// Until a first state is in hand, leave half the time
				// for the answer: pollMargin alone is too little on a
				// long round trip or a busy host, and a late first answer
				// leaves the caller with no state at all.
				w = min(w, (left / 2).Truncate(time.Millisecond))
			}
			if w <= 0 {
				// Too little time for another poll to be worth it.
				<-ctx.Done()
				return last, ctx.Err()
			}
		}
		t, err := c.getTask(ctx, id, w, opts)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = t
		if messages.Terminal(t.State) {
			return t, nil
		}
		if err := ctx.Err(); err != nil {
			return last, err
		}
	}
}

// ListTasks returns one page of tasks and the cursor of the next.
func (c *Client) ListTasks(ctx context.Context, o ListOptions, opts ...CallOption) ([]*messages.Task, string, error) {
	var l list[*messages.Task]
	if _, err := c.do(ctx, http.MethodGet, "/v1/tasks", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// CancelTask cancels a pending task.
func (c *Client) CancelTask(ctx context.Context, id string, opts ...CallOption) (*messages.Task, error) {
	var t messages.Task
	if _, err := c.do(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/cancel", nil, nil, &t, opts); err != nil {
		return nil, err
	}
	return &t, nil
}
