package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// CreateNetwork creates a network (admin). The answer is the network itself
// (201): creating one starts no task.
func (c *Client) CreateNetwork(ctx context.Context, req messages.CreateNetworkRequest, opts ...CallOption) (*messages.Network, error) {
	var n messages.Network
	if _, err := c.do(ctx, http.MethodPost, "/v1/networks", nil, req, &n, opts); err != nil {
		return nil, err
	}
	return &n, nil
}

// ListNetworks returns one page of networks and the next page's cursor.
func (c *Client) ListNetworks(ctx context.Context, o ListOptions, opts ...CallOption) ([]*messages.Network, string, error) {
	var l list[*messages.Network]
	if _, err := c.do(ctx, http.MethodGet, "/v1/networks", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// GetNetwork returns a network by name or id.
func (c *Client) GetNetwork(ctx context.Context, ref string, opts ...CallOption) (*messages.Network, error) {
	var n messages.Network
	if _, err := c.do(ctx, http.MethodGet, "/v1/networks/"+url.PathEscape(ref), nil, nil, &n, opts); err != nil {
		return nil, err
	}
	return &n, nil
}

// UpdateNetworkRequest is the body of PATCH /v1/networks/{name}, a merge
// patch: a nil field stays as it is. Egress is the only field a network can
// change in place.
type UpdateNetworkRequest struct {
	Egress *bool `json:"egress,omitempty"`
}

// UpdateNetwork changes a network in place (admin) and returns it. Pass
// WithIfMatch to refuse the change if the network moved on since it was read
// (revision_conflict).
func (c *Client) UpdateNetwork(ctx context.Context, ref string, req UpdateNetworkRequest, opts ...CallOption) (*messages.Network, error) {
	var n messages.Network
	if _, err := c.do(ctx, http.MethodPatch, "/v1/networks/"+url.PathEscape(ref), nil, req, &n, opts); err != nil {
		return nil, err
	}
	return &n, nil
}

// DeleteNetwork deletes a network (admin); refused with network_in_use while
// VMs are attached to it.
func (c *Client) DeleteNetwork(ctx context.Context, ref string, opts ...CallOption) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/networks/"+url.PathEscape(ref), nil, nil, nil, opts)
	return err
}
