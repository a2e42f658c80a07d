package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/otherix/otherix/messages"
)

// VMMetrics returns a VM's latest resource sample (without Metrics when it
// has none).
func (c *Client) VMMetrics(ctx context.Context, ref string, opts ...CallOption) (*messages.VMMetricsView, error) {
	var v messages.VMMetricsView
	if _, err := c.do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(ref)+"/metrics", nil, nil, &v, opts); err != nil {
		return nil, err
	}
	return &v, nil
}

// TopVMs returns the busiest sampled VMs the caller may list, by CPU, at
// most limit (0: the server's default).
func (c *Client) TopVMs(ctx context.Context, limit int, opts ...CallOption) ([]messages.VMMetricsView, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var l struct {
		Items []messages.VMMetricsView `json:"items"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/top/vms", q, nil, &l, opts); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// TopNodes returns every node with its VMs' latest samples summed, busiest
// first.
func (c *Client) TopNodes(ctx context.Context, opts ...CallOption) ([]messages.NodeTop, error) {
	var l struct {
		Items []messages.NodeTop `json:"items"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/top/nodes", nil, nil, &l, opts); err != nil {
		return nil, err
	}
	return l.Items, nil
}
