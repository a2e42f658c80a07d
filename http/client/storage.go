package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/otherix/otherix/messages"
)

// CreatePool creates a storage pool (admin); the answer is the pool (201).
func (c *Client) CreatePool(ctx context.Context, req messages.CreatePoolRequest, opts ...CallOption) (*messages.StoragePool, error) {
	var p messages.StoragePool
	if _, err := c.do(ctx, http.MethodPost, "/v1/pools", nil, req, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// ListPools returns one page of pools and the next page's cursor.
func (c *Client) ListPools(ctx context.Context, o ListOptions, opts ...CallOption) ([]*messages.StoragePool, string, error) {
	var l list[*messages.StoragePool]
	if _, err := c.do(ctx, http.MethodGet, "/v1/pools", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// GetPool returns a pool by name or id, with its status on each node.
func (c *Client) GetPool(ctx context.Context, ref string, opts ...CallOption) (*messages.StoragePool, error) {
	var p messages.StoragePool
	if _, err := c.do(ctx, http.MethodGet, "/v1/pools/"+url.PathEscape(ref), nil, nil, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// UpdatePoolRequest is the body of PATCH /v1/pools/{name}: a merge patch
// of the spec, whose node set is all that may change.
type UpdatePoolRequest struct {
	Spec UpdatePoolSpec `json:"spec"`
}

// UpdatePoolSpec is the spec part of UpdatePoolRequest; nil stays as is.
type UpdatePoolSpec struct {
	Nodes    *[]string `json:"nodes,omitempty"`
	AllNodes *bool     `json:"all_nodes,omitempty"`
}

// UpdatePool changes a pool's nodes (admin) and returns it.
func (c *Client) UpdatePool(ctx context.Context, ref string, req UpdatePoolRequest, opts ...CallOption) (*messages.StoragePool, error) {
	var p messages.StoragePool
	if _, err := c.do(ctx, http.MethodPatch, "/v1/pools/"+url.PathEscape(ref), nil, req, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// DeletePool deletes a pool (admin); refused with pool_in_use while
// volumes are in it.
func (c *Client) DeletePool(ctx context.Context, ref string, opts ...CallOption) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/pools/"+url.PathEscape(ref), nil, nil, nil, opts)
	return err
}

// CreateVolume creates a volume owned by the caller (201).
func (c *Client) CreateVolume(ctx context.Context, req messages.CreateVolumeRequest, opts ...CallOption) (*messages.Volume, error) {
	var v messages.Volume
	if _, err := c.do(ctx, http.MethodPost, "/v1/volumes", nil, req, &v, opts); err != nil {
		return nil, err
	}
	return &v, nil
}

// ListVolumes returns one page of the volumes in the caller's scope.
func (c *Client) ListVolumes(ctx context.Context, o ListOptions, opts ...CallOption) ([]*messages.Volume, string, error) {
	var l list[*messages.Volume]
	if _, err := c.do(ctx, http.MethodGet, "/v1/volumes", o.query(), nil, &l, opts); err != nil {
		return nil, "", err
	}
	o.record(l.Meta.Revision)
	return l.Items, l.NextCursor, nil
}

// GetVolume returns a volume by id or name.
func (c *Client) GetVolume(ctx context.Context, ref string, opts ...CallOption) (*messages.Volume, error) {
	var v messages.Volume
	if _, err := c.do(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(ref), nil, nil, &v, opts); err != nil {
		return nil, err
	}
	return &v, nil
}

// ResizeVolume grows a volume to size bytes.
func (c *Client) ResizeVolume(ctx context.Context, ref string, size int64, opts ...CallOption) (*messages.Volume, error) {
	var v messages.Volume
	body := messages.ResizeVolumeRequest{SizeBytes: size}
	if _, err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(ref)+"/resize", nil, body, &v, opts); err != nil {
		return nil, err
	}
	return &v, nil
}

// DeleteVolume deletes a volume.
func (c *Client) DeleteVolume(ctx context.Context, ref string, opts ...CallOption) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(ref), nil, nil, nil, opts)
	return err
}
