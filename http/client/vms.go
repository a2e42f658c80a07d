package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

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
	o.record(l.Meta.Revision)
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

// StopVM asks for a VM to be stopped gracefully (ACPI power button). Pass
// WithStopTimeout to bound how long the guest gets to power off.
func (c *Client) StopVM(ctx context.Context, ref string, opts ...CallOption) (*Accepted, error) {
	return c.accepted(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+"/stop", nil, nil, opts)
}

// WithStopTimeout sets how long a graceful stop waits for the guest to
// power off (?timeout=, a whole number of seconds from 1s to 1h).
func WithStopTimeout(d time.Duration) CallOption {
	return withQuery("timeout", d.String())
}

// PoweroffVM asks for a VM to be powered off at once (a hard stop).
func (c *Client) PoweroffVM(ctx context.Context, ref string, opts ...CallOption) (*Accepted, error) {
	return c.accepted(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+"/poweroff", nil, nil, opts)
}

// RebootVM asks for a VM to be rebooted through the guest, or with force
// reset at once.
func (c *Client) RebootVM(ctx context.Context, ref string, force bool, opts ...CallOption) (*Accepted, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.accepted(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+"/reboot", q, nil, opts)
}

// PauseVM pauses a running VM's vCPUs and returns the VM as its node reports
// it (synchronous).
func (c *Client) PauseVM(ctx context.Context, ref string, opts ...CallOption) (*messages.VM, error) {
	return c.vmOp(ctx, ref, "/pause", opts)
}

// ResumeVM resumes a paused VM and returns the VM as its node reports it
// (synchronous).
func (c *Client) ResumeVM(ctx context.Context, ref string, opts ...CallOption) (*messages.VM, error) {
	return c.vmOp(ctx, ref, "/resume", opts)
}

func (c *Client) vmOp(ctx context.Context, ref, suffix string, opts []CallOption) (*messages.VM, error) {
	var vm messages.VM
	if _, err := c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+suffix, nil, nil, &vm, opts); err != nil {
		return nil, err
	}
	return &vm, nil
}

// VMLogs returns the end of a VM's serial console output, raw: at most tail
// bytes, or the node's default (64 KiB) when tail is 0.
func (c *Client) VMLogs(ctx context.Context, ref string, tail int64, opts ...CallOption) ([]byte, error) {
	q := url.Values{}
	if tail > 0 {
		q.Set("tail", strconv.FormatInt(tail, 10))
	}
	var out []byte
	opts = append([]CallOption{withAccept("text/plain")}, opts...)
	if _, err := c.do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(ref)+"/logs", q, nil, &out, opts); err != nil {
		return nil, err
	}
	return out, nil
}

// withQuery sets one query parameter on the request.
func withQuery(name, value string) CallOption {
	return func(r *http.Request) {
		q := r.URL.Query()
		q.Set(name, value)
		r.URL.RawQuery = q.Encode()
	}
}

// withAccept replaces the Accept header.
func withAccept(mediaType string) CallOption {
	return func(r *http.Request) { r.Header.Set("Accept", mediaType) }
}
