package client

import (
	"context"
	"net/http"

	"github.com/otherix/otherix/messages"
)

// Settings reads the cluster settings (admin).
func (c *Client) Settings(ctx context.Context, opts ...CallOption) (*messages.Settings, error) {
	var s messages.Settings
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/settings", nil, nil, &s, opts); err != nil {
		return nil, err
	}
	return &s, nil
}

// UpdateSettings changes cluster settings (admin) and returns them as
// written. The control plane checks the change against every node's host
// prefixes, the networks and the tunnel addresses first (codes
// supernet_host_conflict, network_overlap, supernet_too_small,
// vni_range_in_use, underlay_mtu_in_use). Pass WithIfMatch to refuse the
// change if the settings moved on since they were read.
func (c *Client) UpdateSettings(ctx context.Context, patch messages.SettingsPatch, opts ...CallOption) (*messages.Settings, error) {
	var s messages.Settings
	if _, err := c.do(ctx, http.MethodPatch, "/v1/cluster/settings", nil, patch, &s, opts); err != nil {
		return nil, err
	}
	return &s, nil
}
