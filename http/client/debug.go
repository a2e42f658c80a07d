package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// DebugProfile returns a runtime profile of the replica that answers
// (GET /v1/debug/pprof/NAME, admin), raw: pprof's format, or text with
// debug > 0. seconds is the length of a "profile" or "trace" (0: the
// server's default); the caller's context must allow for it.
func (c *Client) DebugProfile(ctx context.Context, name string, seconds, debug int, opts ...CallOption) ([]byte, error) {
	q := url.Values{}
	if seconds > 0 {
		q.Set("seconds", strconv.Itoa(seconds))
	}
	if debug > 0 {
		q.Set("debug", strconv.Itoa(debug))
	}
	var out []byte
	opts = append([]CallOption{withAccept("*/*")}, opts...)
	if _, err := c.do(ctx, http.MethodGet, "/v1/debug/pprof/"+url.PathEscape(name), q, nil, &out, opts); err != nil {
		return nil, err
	}
	return out, nil
}
