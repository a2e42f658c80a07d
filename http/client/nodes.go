package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// CAPEM returns the cluster CA certificate (PEM) from GET /v1/ca, which
// needs no credentials. Hash it with security.Fingerprint to compare with
// the fingerprint a join token pins.
func (c *Client) CAPEM(ctx context.Context, opts ...CallOption) ([]byte, error) {
	resp, raw, err := c.send(ctx, http.MethodGet, "/v1/ca", c.base.String()+"/v1/ca", nil, false, "", opts)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, decodeAPIError(resp, raw)
	}
	return raw, nil
}

// ListNodes returns one page of enrolled nodes and the next page's cursor.
func (c *Client) ListNodes(ctx context.Context, o ListOptions, opts ...CallOption) ([]*messages.Node, string, error) {
	var l list[*messages.Node]
	if _, err := c.do(ctx, http.MethodGet, "/v1/nodes", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// GetNode returns a node by name.
func (c *Client) GetNode(ctx context.Context, name string, opts ...CallOption) (*messages.Node, error) {
	var n messages.Node
	if _, err := c.do(ctx, http.MethodGet, "/v1/nodes/"+url.PathEscape(name), nil, nil, &n, opts); err != nil {
		return nil, err
	}
	return &n, nil
}

// CreateJoinToken mints a one-time join token (admin). The token is in the
// answer only; it is never shown again.
func (c *Client) CreateJoinToken(ctx context.Context, req messages.CreateJoinTokenRequest, opts ...CallOption) (*messages.CreatedJoinToken, error) {
	var t messages.CreatedJoinToken
	if _, err := c.do(ctx, http.MethodPost, "/v1/nodes/join-tokens", nil, req, &t, opts); err != nil {
		return nil, err
	}
	return &t, nil
}

// ListJoinTokens returns one page of join tokens (admin), without secrets.
func (c *Client) ListJoinTokens(ctx context.Context, o ListOptions, opts ...CallOption) ([]messages.JoinTokenView, string, error) {
	var l list[messages.JoinTokenView]
	if _, err := c.do(ctx, http.MethodGet, "/v1/nodes/join-tokens", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// RevokeJoinToken revokes an unused join token (admin).
func (c *Client) RevokeJoinToken(ctx context.Context, id string, opts ...CallOption) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/nodes/join-tokens/"+url.PathEscape(id), nil, nil, nil, opts)
	return err
}
