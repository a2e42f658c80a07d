package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/otherix/otherix/messages"
)

// Accepted is the answer to an asynchronous write (202): the task doing the
// work and the VM it works on.
type Accepted struct {
	Task *messages.Task `json:"task"`
	VM   *messages.VM   `json:"vm,omitempty"`
	// Location is where to poll the task (/v1/tasks/{id}).
	Location string `json:"-"`
	// Replayed is true when the server answered with the stored answer to an
	// earlier request with the same Idempotency-Key.
	Replayed bool `json:"-"`
}

func (c *Client) accepted(ctx context.Context, method, path string, query url.Values, in any, opts []CallOption) (*Accepted, error) {
	var a Accepted
	resp, err := c.do(ctx, method, path, query, in, &a, opts)
	if err != nil {
		return nil, err
	}
	a.Location = resp.header.Get("Location")
	a.Replayed = resp.header.Get("Idempotent-Replayed") == "true"
	return &a, nil
}

// CreateVM asks for a new VM. The answer carries the vm.create task.
func (c *Client) CreateVM(ctx context.Context, req messages.CreateVMRequest, opts ...CallOption) (*Accepted, error) {
	return c.accepted(ctx, http.MethodPost, "/v1/vms", nil, req, opts)
}

// GetVM returns a VM by id or name.
func (c *Client) GetVM(ctx context.Context, ref string, opts ...CallOption) (*messages.VM, error) {
	var vm messages.VM
	if _, err := c.do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(ref), nil, nil, &vm, opts); err != nil {
		return nil, err
	}
	return &vm, nil
}

// ListVMs returns one page of VMs and the cursor of the next ("" on the last).
func (c *Client) ListVMs(ctx context.Context, o ListOptions, opts ...CallOption) ([]*messages.VM, string, error) {
	var l list[*messages.VM]
	if _, err := c.do(ctx, http.MethodGet, "/v1/vms", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	return l.Items, l.NextCursor, nil
}

// UpdateVM changes a VM's spec. Set req.Revision (or pass WithIfMatch) to
// refuse the change if the VM moved on since it was read.
func (c *Client) UpdateVM(ctx context.Context, ref string, req messages.UpdateVMRequest, opts ...CallOption) (*messages.VM, error) {
	var vm messages.VM
	if _, err := c.do(ctx, http.MethodPatch, "/v1/vms/"+url.PathEscape(ref), nil, req, &vm, opts); err != nil {
		return nil, err
	}
	return &vm, nil
}

// WithIfMatch sends the revision a change is based on as If-Match.
func WithIfMatch(revision int64) CallOption {
	return func(r *http.Request) { r.Header.Set("If-Match", `"`+strconv.FormatInt(revision, 10)+`"`) }
}

// DeleteVM asks for a VM's deletion; force deletes even if its node cannot
// confirm.
func (c *Client) DeleteVM(ctx context.Context, ref string, force bool, opts ...CallOption) (*Accepted, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.accepted(ctx, http.MethodDelete, "/v1/vms/"+url.PathEscape(ref), q, nil, opts)
}

// StartVM asks for a VM to be started.
func (c *Client) StartVM(ctx context.Context, ref string, opts ...CallOption) (*Accepted, error) {
	return c.accepted(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+"/start", nil, nil, opts)
}

// StopVM asks for a VM to be stopped gracefully.
func (c *Client) StopVM(ctx context.Context, ref string, opts ...CallOption) (*Accepted, error) {
	return c.accepted(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+"/stop", nil, nil, opts)
}
