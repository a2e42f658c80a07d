// Package client is the Go SDK of the Otherix control-plane API, used by the
// CLI and by tests. Methods map one to one onto endpoints and return the
// types of package messages, exactly as the API sends them.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client talks to one control plane. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (TLS settings, transport, timeouts).
// Keep its Timeout above the longest long poll (60s) or leave it zero and
// bound calls with their contexts.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithToken sends "Authorization: Bearer <token>" (a JWT or an otx_ API token).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client for the API at baseURL, such as https://api:8443.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("parse base url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("base url %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{base: u, http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// CallOption adjusts one request.
type CallOption func(*http.Request)

// WithIdempotencyKey makes a write safe to retry: the server runs it once and
// answers retries with the same key (and the same request) with the first
// answer. Use a fresh random key per intended change.
func WithIdempotencyKey(key string) CallOption {
	return func(r *http.Request) { r.Header.Set("Idempotency-Key", key) }
}

// WithRequestID sets X-Request-Id, to find the request in the server's logs.
func WithRequestID(id string) CallOption {
	return func(r *http.Request) { r.Header.Set("X-Request-Id", id) }
}

// response is what do hands back besides the decoded body.
type response struct {
	status int
	header http.Header
}

// do sends one request to path (already escaped) and decodes a 2xx JSON answer into out (when not nil).
// Anything else becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, opts []CallOption) (*response, error) {
	// path arrives escaped (segments through url.PathEscape): join as text
	// so an escaped name is not escaped twice.
	u := c.base.String() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	// Bound what a misbehaving server can make us buffer.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeAPIError(resp, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return &response{status: resp.StatusCode, header: resp.Header}, nil
}

const maxResponseBytes = 64 << 20

// Healthz reports whether the API process answers.
func (c *Client) Healthz(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil, nil)
	return err
}

// Readyz reports whether the control plane is ready for traffic.
func (c *Client) Readyz(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil, nil)
	return err
}

// ListOptions asks for one page of a list.
type ListOptions struct {
	// Limit is the page size, 1 to 200; 0 lets the server choose (50).
	Limit int
	// Cursor is the NextCursor of the previous page; empty for the first.
	Cursor string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	return q
}

// list is the shape of every list answer.
type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}
