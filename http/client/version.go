package client

import (
	"context"
	"net/http"

	"github.com/otherix/otherix/messages"
)

// Version asks the control plane what it runs. With credentials the answer
// carries the build details; without, the version alone.
func (c *Client) Version(ctx context.Context, opts ...CallOption) (*messages.VersionInfo, error) {
	var v messages.VersionInfo
	if _, err := c.do(ctx, http.MethodGet, "/v1/version", nil, nil, &v, opts); err != nil {
		return nil, err
	}
	return &v, nil
}
