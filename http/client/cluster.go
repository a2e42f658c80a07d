package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// CreateClusterJoinToken mints a one-time replica join token (admin). The
// token is in the answer only; it is never shown again.
func (c *Client) CreateClusterJoinToken(ctx context.Context, req messages.CreateClusterJoinTokenRequest, opts ...CallOption) (*messages.CreatedJoinToken, error) {
	var t messages.CreatedJoinToken
	if _, err := c.do(ctx, http.MethodPost, "/v1/cluster/join-tokens", nil, req, &t, opts); err != nil {
		return nil, err
	}
	return &t, nil
}

// RemoveClusterMember takes a replica out of the cluster (admin): ref is
// its name, member id or peer address. force skips the healthy-quorum
// check.
func (c *Client) RemoveClusterMember(ctx context.Context, ref string, force bool, opts ...CallOption) (*messages.ClusterMember, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	var r messages.RemovedClusterMember
	if _, err := c.do(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(ref), q, nil, &r, opts); err != nil {
		return nil, err
	}
	return &r.Member, nil
}

// ClusterMembers lists the control plane's replicas (admin).
func (c *Client) ClusterMembers(ctx context.Context, opts ...CallOption) ([]messages.ClusterMember, error) {
	var l list[messages.ClusterMember]
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/members", nil, nil, &l, opts); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// ClusterEndpoints lists the API URLs of the replicas that serve (any
// authenticated caller): what a client fails over between.
func (c *Client) ClusterEndpoints(ctx context.Context, opts ...CallOption) ([]string, error) {
	var e messages.ClusterEndpoints
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/endpoints", nil, nil, &e, opts); err != nil {
		return nil, err
	}
	return e.APIURLs, nil
}
