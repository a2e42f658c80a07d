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
	"sync"
	"time"

	"github.com/otherix/otherix/http/failover"
	"github.com/otherix/otherix/messages"
)

// Client talks to one control plane. It is safe for concurrent use.
type Client struct {
	base *url.URL
	http *http.Client

	mu    sync.Mutex // guards token and refreshToken
	token string
	// refreshToken is set by WithSession: a 401 then refreshes the session
	// once and retries the request.
	refreshToken string
	onRefresh    func(messages.TokenPair)
	// refresher, when set, replaces the call to /v1/auth/refresh (and
	// onRefresh): see WithRefresher.
	refresher func(ctx context.Context, refreshToken string) (*messages.TokenPair, error)
	// refreshing serialises refreshes, so concurrent 401s rotate the
	// refresh token once (a second rotation of the same token would look
	// like theft to the server and revoke the session).
	refreshing sync.Mutex

	// replicas and onSwitch are WithFailover's; fo is the transport New
	// built from them (nil without failover).
	replicas []string
	onSwitch func(from, to string)
	fo       *failover.Transport
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (TLS settings, transport, timeouts).
// Keep its Timeout above the longest long poll (60s) or leave it zero and
// bound calls with their contexts.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithToken sends "Authorization: Bearer <token>" (a JWT or an otx_ API token).
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithSession authenticates with a login session: access is the JWT sent as
// the bearer token, refresh the refresh token. When the API answers 401 the
// client calls /v1/auth/refresh once, hands the new pair to onRefresh (which
// may be nil; the CLI saves the pair to its config) and retries the request
// once. The refresh token rotates on every refresh, so a caller that keeps
// the pair anywhere must save what onRefresh gets.
func WithSession(access, refresh string, onRefresh func(messages.TokenPair)) Option {
	return func(c *Client) { c.token, c.refreshToken, c.onRefresh = access, refresh, onRefresh }
}

// WithRefresher makes a session's refresh go through fn, for callers that
// share the session with other processes: fn gets the refresh token this
// client holds and returns the pair to use from now on. It may call Refresh
// (which never refreshes itself) or return a pair another process already
// got and saved for that token. The CLI takes a lock on its config file,
// rereads it, and refreshes only if no other process did. onRefresh is not
// called when fn is set: fn saves what it must.
func WithRefresher(fn func(ctx context.Context, refreshToken string) (*messages.TokenPair, error)) Option {
	return func(c *Client) { c.refresher = fn }
}

// failoverRounds is how many times a request may try every replica.
const failoverRounds = 4

// failoverHedge is how long a write with an Idempotency-Key waits for an
// answer before it is sent to the next replica too (failover.HedgeAfter):
// about one etcd election timeout, after which the survivors of a dead
// leader have elected another.
const failoverHedge = time.Second

// WithFailover spreads the client over the control plane's replicas: the
// base URL first, then replicas (their API URLs, as GET
// /v1/cluster/endpoints answers them). A request that cannot reach a replica,
// or that one answers 503 not_ready (or no_quorum, for a read or a write
// with an Idempotency-Key), goes to the next; the replica that answered is
// used first from then on (package failover says exactly which requests
// move). When every replica failed, the list is tried again up to three
// times, 0.25, 0.5 and 1 s later. A write with an Idempotency-Key that has
// no answer after a second is sent to the next replica as well (the server
// runs the key once; the first answer wins). onSwitch, which may be nil, is told each
// change of replica. It wraps the transport of the HTTP client given with
// WithHTTPClient, in whichever order the options come.
func WithFailover(replicas []string, onSwitch func(from, to string)) Option {
	return func(c *Client) { c.replicas, c.onSwitch = replicas, onSwitch }
}

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
	if len(c.replicas) > 0 {
		base := c.http.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		fo, err := failover.New(base, append([]string{u.Scheme + "://" + u.Host}, c.replicas...))
		if err != nil {
			return nil, fmt.Errorf("replicas: %w", err)
		}
		fo.OnSwitch = c.onSwitch
		// Three more passes over the list, 0.25, 0.5 and 1 s apart: the
		// survivors of a dead leader elect another within a second or two.
		fo.Rounds = failoverRounds
		fo.HedgeAfter = failoverHedge
		hc := *c.http
		hc.Transport = fo
		c.http, c.fo = &hc, fo
	}
	return c, nil
}

// Server returns the API URL the next request goes to first: the base URL,
// or with failover the replica that last answered.
func (c *Client) Server() string {
	return c.current().String()
}

// Replicas returns the API URLs the client fails over between (the base URL
// first), or nil without failover.
func (c *Client) Replicas() []string {
	if c.fo == nil {
		return nil
	}
	return c.fo.Servers()
}

// current is the base URL with the sticky replica's scheme and host.
func (c *Client) current() *url.URL {
	u := *c.base
	if c.fo != nil {
		if cur, err := url.Parse(c.fo.Current()); err == nil {
			u.Scheme, u.Host = cur.Scheme, cur.Host
		}
	}
	return &u
}

// transport is the HTTP transport under failover: the one with the TLS
// settings.
func (c *Client) transport() http.RoundTripper {
	if c.fo != nil {
		return c.fo.Base
	}
	return c.http.Transport
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

// do sends one request to path (already escaped) and decodes a 2xx JSON answer into out (when not nil);
// an out of type *[]byte receives the raw answer instead.
// Anything else becomes an *APIError. With a session (WithSession), a 401
// refreshes the session and sends the request once more.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, opts []CallOption) (*response, error) {
	// path arrives escaped (segments through url.PathEscape): join as text
	// so an escaped name is not escaped twice.
	u := c.base.String() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	// The body is kept as bytes so that a retry after a refresh can send it
	// again.
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = b
	}
	token := c.bearer()
	resp, raw, err := c.send(ctx, method, path, u, body, in != nil, token, opts)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && c.canRefresh(path) {
		if rerr := c.refresh(ctx, token); rerr == nil {
			resp, raw, err = c.send(ctx, method, path, u, body, in != nil, c.bearer(), opts)
			if err != nil {
				return nil, err
			}
		}
		// A failed refresh leaves the first 401 as the answer: the
		// session is over and the caller must log in again.
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeAPIError(resp, raw)
	}
	if b, ok := out.(*[]byte); ok {
		*b = raw // a raw answer such as a log, not JSON
	} else if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return &response{status: resp.StatusCode, header: resp.Header}, nil
}

// send sends one request and reads its whole (bounded) answer.
func (c *Client) send(ctx context.Context, method, path, u string, body []byte, hasBody bool, token string, opts []CallOption) (*http.Response, []byte, error) {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	// Bound what a misbehaving server can make us buffer.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return resp, raw, nil
}

// bearer is the token requests carry now.
func (c *Client) bearer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// canRefresh reports whether a 401 on path may be cured by a refresh: there
// is a session, and path is not itself an authentication endpoint (a wrong
// password or a dead refresh token must not loop).
func (c *Client) canRefresh(path string) bool {
	if strings.HasPrefix(path, "/v1/auth/") {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshToken != ""
}

// refresh rotates the session whose access token was used, unless another
// request already did so, in which case the new token is simply used.
func (c *Client) refresh(ctx context.Context, used string) error {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	c.mu.Lock()
	current, rt := c.token, c.refreshToken
	c.mu.Unlock()
	if current != used {
		return nil // refreshed meanwhile by a concurrent request
	}
	var pair *messages.TokenPair
	var err error
	cb := c.onRefresh
	if c.refresher != nil {
		pair, err = c.refresher(ctx, rt)
		cb = nil
	} else {
		pair, err = c.Refresh(ctx, rt)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.token, c.refreshToken = pair.AccessToken, pair.RefreshToken
	c.mu.Unlock()
	if cb != nil {
		cb(*pair)
	}
	return nil
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
	// Revision, when set, receives the page's meta.revision: the etcd
	// revision it was read at, from which Watch continues without a gap.
	Revision *int64
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
	Meta       struct {
		Revision int64 `json:"revision"`
	} `json:"meta"`
}

// record hands the page's revision to whoever asked for it.
func (o ListOptions) record(rev int64) {
	if o.Revision != nil {
		*o.Revision = rev
	}
}
