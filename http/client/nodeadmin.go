package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// CordonNode stops new VMs from being placed on a node; it answers the node.
func (c *Client) CordonNode(ctx context.Context, name string, opts ...CallOption) (*messages.Node, error) {
	return c.nodeAction(ctx, name, "cordon", opts)
}

// UncordonNode lets VMs be placed on a cordoned node again.
func (c *Client) UncordonNode(ctx context.Context, name string, opts ...CallOption) (*messages.Node, error) {
	return c.nodeAction(ctx, name, "uncordon", opts)
}

func (c *Client) nodeAction(ctx context.Context, name, action string, opts []CallOption) (*messages.Node, error) {
	var n messages.Node
	if _, err := c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/"+action, nil, nil, &n, opts); err != nil {
		return nil, err
	}
	return &n, nil
}

// DeleteNode removes a node (admin). Without force it is refused with
// node_has_vms while VMs are placed on the node.
func (c *Client) DeleteNode(ctx context.Context, name string, force bool, opts ...CallOption) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	_, err := c.do(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), q, nil, nil, opts)
	return err
}
