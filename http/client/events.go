package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// EventFilter narrows ListEvents. Empty fields filter nothing.
type EventFilter struct {
	// Type is an object kind (vm, node, task) or an event type (vm.started).
	Type string
	// Since is a duration back from now ("10m") or an RFC 3339 time.
	Since string
	// Object is an object's name or id.
	Object string
}

// ListEvents lists one page of lifecycle events, oldest first. A page may
// be short, even empty, while its cursor is set: the server reads a bounded
// number of events per page; follow the cursor until it is empty.
func (c *Client) ListEvents(ctx context.Context, f EventFilter, o ListOptions, opts ...CallOption) ([]*messages.Event, string, error) {
	q := o.query()
	for k, v := range map[string]string{"type": f.Type, "since": f.Since, "object": f.Object} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var l list[*messages.Event]
	if _, err := c.do(ctx, http.MethodGet, "/v1/events", q, nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// GetEvent reads one lifecycle event.
func (c *Client) GetEvent(ctx context.Context, id string, opts ...CallOption) (*messages.Event, error) {
	var e messages.Event
	if _, err := c.do(ctx, http.MethodGet, "/v1/events/"+url.PathEscape(id), nil, nil, &e, opts); err != nil {
		return nil, err
	}
	return &e, nil
}
