package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// GetQuota returns a user's quota and usage (admin, or oneself).
func (c *Client) GetQuota(ctx context.Context, userID string, opts ...CallOption) (*messages.QuotaView, error) {
	return c.quota(ctx, http.MethodGet, userID, nil, opts)
}

// SetQuota replaces a user's quota (admin): a limit left nil is no limit.
func (c *Client) SetQuota(ctx context.Context, userID string, q messages.Quota, opts ...CallOption) (*messages.QuotaView, error) {
	return c.quota(ctx, http.MethodPut, userID, q, opts)
}

func (c *Client) quota(ctx context.Context, method, userID string, in any, opts []CallOption) (*messages.QuotaView, error) {
	var v messages.QuotaView
	if _, err := c.do(ctx, method, "/v1/users/"+url.PathEscape(userID)+"/quota", nil, in, &v, opts); err != nil {
		return nil, err
	}
	return &v, nil
}
