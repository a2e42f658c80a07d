package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/otherix/otherix/messages"
)

// ErrDryRunUnsupported is what CheckDryRun answers when the
// control plane does not list messages.FeatureDryRun, so it would ignore
// ?dry_run=true and carry the write out.
var ErrDryRunUnsupported = &APIError{Code: "dry_run_unsupported",
	Message: "this control plane does not support dry runs (it would carry the write out): upgrade it first"}

// CheckDryRun asks the control plane whether it takes ?dry_run=true, and
// answers ErrDryRunUnsupported when it does not. Call it before any dry
// run: an older control plane ignores the parameter.
func (c *Client) CheckDryRun(ctx context.Context, opts ...CallOption) error {
	v, err := c.Version(ctx, opts...)
	if err != nil {
		return err
	}
	if !slices.Contains(v.Features, messages.FeatureDryRun) {
		return ErrDryRunUnsupported
	}
	return nil
}

// dryRun sends a write with ?dry_run=true (plus query) and decodes what
// it would do.
func (c *Client) dryRun(ctx context.Context, method, path string, query url.Values, in any, opts []CallOption) (*messages.DryRunResult, error) {
	if query == nil {
		query = url.Values{}
	}
	query.Set("dry_run", "true")
	var r messages.DryRunResult
	resp, err := c.do(ctx, method, path, query, in, &r, opts)
	if err != nil {
		return nil, err
	}
	if !r.DryRun || resp.status != http.StatusOK {
		// Never report a write that happened as a dry run.
		return nil, fmt.Errorf("%s %s: the answer is not a dry run's (status %d): the write may have been carried out", method, path, resp.status)
	}
	return &r, nil
}

// DryRunCreateVM checks a VM create and answers the VM it would make.
func (c *Client) DryRunCreateVM(ctx context.Context, req messages.CreateVMRequest, opts ...CallOption) (*messages.DryRunResult, error) {
	return c.dryRun(ctx, http.MethodPost, "/v1/vms", nil, req, opts)
}

// DryRunUpdateVM checks a VM spec change and answers the VM as it would be.
func (c *Client) DryRunUpdateVM(ctx context.Context, ref string, req messages.UpdateVMRequest, opts ...CallOption) (*messages.DryRunResult, error) {
	return c.dryRun(ctx, http.MethodPatch, "/v1/vms/"+url.PathEscape(ref), nil, req, opts)
}

// DryRunDeleteVM checks a VM delete and answers the VM it would delete.
func (c *Client) DryRunDeleteVM(ctx context.Context, ref string, force bool, opts ...CallOption) (*messages.DryRunResult, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.dryRun(ctx, http.MethodDelete, "/v1/vms/"+url.PathEscape(ref), q, nil, opts)
}

// DryRunPowerVM checks a start ("running") or a graceful stop ("stopped").
func (c *Client) DryRunPowerVM(ctx context.Context, ref, power string, opts ...CallOption) (*messages.DryRunResult, error) {
	op := "/start"
	if power == messages.PowerStopped {
		op = "/stop"
	}
	return c.dryRun(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+op, nil, nil, opts)
}

// DryRunCreateNetwork checks a network create and answers the network it
// would make.
func (c *Client) DryRunCreateNetwork(ctx context.Context, req messages.CreateNetworkRequest, opts ...CallOption) (*messages.DryRunResult, error) {
	return c.dryRun(ctx, http.MethodPost, "/v1/networks", nil, req, opts)
}

// DryRunUpdateNetwork checks a network change.
func (c *Client) DryRunUpdateNetwork(ctx context.Context, ref string, req UpdateNetworkRequest, opts ...CallOption) (*messages.DryRunResult, error) {
	return c.dryRun(ctx, http.MethodPatch, "/v1/networks/"+url.PathEscape(ref), nil, req, opts)
}

// DryRunDeleteNetwork checks a network delete (refused while VMs use it).
func (c *Client) DryRunDeleteNetwork(ctx context.Context, ref string, opts ...CallOption) (*messages.DryRunResult, error) {
	return c.dryRun(ctx, http.MethodDelete, "/v1/networks/"+url.PathEscape(ref), nil, nil, opts)
}
