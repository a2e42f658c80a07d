package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// ListImages lists the nodes' cached images (admin): node's only, or with
// node empty every ready node's, each node on its own item (an item with
// Error for a node that did not answer).
func (c *Client) ListImages(ctx context.Context, node string, opts ...CallOption) ([]messages.NodeImages, error) {
	q := url.Values{}
	if node != "" {
		q.Set("node", node)
	}
	var l messages.NodeImagesList
	if _, err := c.do(ctx, http.MethodGet, "/v1/images", q, nil, &l, opts); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// DeleteImage removes the image sha256 from node's cache (admin); refused
// with image_in_use while a VM disk uses it.
func (c *Client) DeleteImage(ctx context.Context, node, sha256 string, opts ...CallOption) error {
	q := url.Values{"node": {node}}
	_, err := c.do(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(sha256), q, nil, nil, opts)
	return err
}
