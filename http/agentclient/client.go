// Package agentclient is the control plane's client of the agent API
// (api/openapi/agent.yaml): mutual TLS with the control plane's client
// certificate, the agent's node certificate checked against the cluster CA
// and the node's name.
package agentclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/internal/requestid"
	"github.com/otherix/otherix/messages"
)

// Timeouts and limits of agent calls.
const (
	// RequestTimeout bounds a call that does not long-poll.
	RequestTimeout = 30 * time.Second
	// LongPollSlack is added to a long poll's wait for the whole request.
	LongPollSlack = 10 * time.Second
	// MaxWait is the longest long poll the agent grants.
	MaxWait = 60 * time.Second
	// MaxResponseBytes bounds a JSON answer.
	MaxResponseBytes = 1 << 20
	// MaxLogBytes bounds a serial log answer (the agent serves at most 1 MiB).
	MaxLogBytes = 1<<20 + 4<<10
)

// Node names the agent to call: the node's name (its certificate's DNS SAN)
// and the endpoint from its last heartbeat.
type Node struct {
	Name     string
	Endpoint string
}

// Client calls agents. It is safe for concurrent use.
type Client struct {
	roots      *x509.CertPool
	clientCert func() (*tls.Certificate, error)
	// hc holds one client per node name: the name is the TLS server name,
	// fixed per transport, and connections are reused per node.
	mu sync.Mutex
	hc map[string]*http.Client
}

// New returns a client that trusts agents whose certificate chains to roots
// and presents clientCert, asked anew at every handshake so that a renewed
// certificate is used as soon as it is issued.
func New(roots *x509.CertPool, clientCert func() (*tls.Certificate, error)) *Client {
	return &Client{roots: roots, clientCert: clientCert, hc: map[string]*http.Client{}}
}

// httpClient returns the client for one node, whose certificate must name it.
func (c *Client) httpClient(name string) *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc, ok := c.hc[name]; ok {
		return hc
	}
	if len(c.hc) >= 10_000 {
		for k, hc := range c.hc {
			hc.CloseIdleConnections()
			delete(c.hc, k)
		}
	}
	tr := &http.Transport{
		Proxy:                 nil, // agents are called directly, never through a proxy
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // long polls wait for headers; the request ctx bounds them
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    c.roots,
			ServerName: name,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return c.clientCert()
			},
		},
	}
	hc := &http.Client{Transport: tr,
		// Redirects are never followed: an agent has no reason to send one,
		// and following it would take the client certificate elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.hc[name] = hc
	return hc
}

// Submit starts a task on the agent, or returns the task it already has with
// this id (the control plane's job id).
func (c *Client) Submit(ctx context.Context, n Node, req messages.AgentTaskRequest) (*messages.AgentTask, error) {
	var t messages.AgentTask
	if err := c.do(ctx, n, http.MethodPost, "/v1/tasks", nil, req, RequestTimeout, &t); err != nil {
		return nil, fmt.Errorf("submit %s task %s to node %s: %w", req.Kind, req.ID, n.Name, err)
	}
	return &t, nil
}

// Task reads a task; with wait > 0 the agent answers as soon as the task
// ends, or after wait (capped at MaxWait) with the task still running.
func (c *Client) Task(ctx context.Context, n Node, id string, wait time.Duration) (*messages.AgentTask, error) {
	q := url.Values{}
	timeout := RequestTimeout
	if wait > 0 {
		wait = min(wait, MaxWait)
		q.Set("wait", wait.String())
		timeout = wait + LongPollSlack
	}
	var t messages.AgentTask
	if err := c.do(ctx, n, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), q, nil, timeout, &t); err != nil {
		return nil, fmt.Errorf("get task %s on node %s: %w", id, n.Name, err)
	}
	return &t, nil
}

// VM reads a VM as the agent observes it now.
func (c *Client) VM(ctx context.Context, n Node, id string) (*messages.VMObserved, error) {
	return c.vmCall(ctx, n, http.MethodGet, id, "")
}

// Pause pauses a running VM's vCPUs.
func (c *Client) Pause(ctx context.Context, n Node, id string) (*messages.VMObserved, error) {
	return c.vmCall(ctx, n, http.MethodPost, id, "/pause")
}

// Resume resumes a paused VM.
func (c *Client) Resume(ctx context.Context, n Node, id string) (*messages.VMObserved, error) {
	return c.vmCall(ctx, n, http.MethodPost, id, "/resume")
}

func (c *Client) vmCall(ctx context.Context, n Node, method, id, suffix string) (*messages.VMObserved, error) {
	var v messages.VMObserved
	if err := c.do(ctx, n, method, "/v1/vms/"+url.PathEscape(id)+suffix, nil, nil, RequestTimeout, &v); err != nil {
		return nil, fmt.Errorf("vm %s%s on node %s: %w", id, suffix, n.Name, err)
	}
	return &v, nil
}

// Log returns the end of a VM's serial console output: at most tail bytes
// (0 for the agent's default).
func (c *Client) Log(ctx context.Context, n Node, id string, tail int64) ([]byte, error) {
	q := url.Values{}
	if tail > 0 {
		q.Set("tail", strconv.FormatInt(tail, 10))
	}
	var out []byte
	if err := c.do(ctx, n, http.MethodGet, "/v1/vms/"+url.PathEscape(id)+"/log", q, nil, RequestTimeout, &out); err != nil {
		return nil, fmt.Errorf("log of vm %s on node %s: %w", id, n.Name, err)
	}
	return out, nil
}

// Images lists the node's cached images with the VMs using them.
func (c *Client) Images(ctx context.Context, n Node) ([]messages.NodeImage, error) {
	var l messages.NodeImageList
	if err := c.do(ctx, n, http.MethodGet, "/v1/images", nil, nil, RequestTimeout, &l); err != nil {
		return nil, fmt.Errorf("images of node %s: %w", n.Name, err)
	}
	return l.Items, nil
}

// DeleteImage removes an image from the node's cache; the agent refuses
// with image_in_use while a VM disk uses it.
func (c *Client) DeleteImage(ctx context.Context, n Node, sha256 string) error {
	if err := c.do(ctx, n, http.MethodDelete, "/v1/images/"+url.PathEscape(sha256), nil, nil, RequestTimeout, nil); err != nil {
		return fmt.Errorf("delete image %s on node %s: %w", sha256, n.Name, err)
	}
	return nil
}

// do sends one request; out is a JSON target, or *[]byte for a raw body.
func (c *Client) do(ctx context.Context, n Node, method, path string, q url.Values, body any, timeout time.Duration, out any) error {
	base, err := endpoint(n)
	if err != nil {
		return err
	}
	u := base.JoinPath(path)
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if id := requestid.From(ctx); id != "" {
		req.Header.Set(requestid.Header, id)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.httpClient(n.Name).Do(req)
	if err != nil {
		return transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		// An answer without a body (204) is all there is.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBytes))
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		b, err := readLimited(resp.Body, MaxLogBytes)
		if err != nil {
			return err
		}
		*raw = b
		return nil
	}
	b, err := readLimited(resp.Body, MaxResponseBytes)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &Error{Status: resp.StatusCode, Err: fmt.Errorf("%w: decode answer: %v", ErrBadResponse, err)}
	}
	return nil
}

// endpoint parses a node's endpoint; only https is ever dialled.
func endpoint(n Node) (*url.URL, error) {
	if n.Name == "" {
		return nil, fmt.Errorf("%w: no node name", ErrNoEndpoint)
	}
	if err := messages.ValidateEndpoint("endpoint", n.Endpoint); err != nil {
		return nil, fmt.Errorf("%w: node %s has %q", ErrNoEndpoint, n.Name, n.Endpoint)
	}
	u, _ := url.Parse(strings.TrimSuffix(n.Endpoint, "/"))
	return u, nil
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, transportError(err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: answer over %d bytes", ErrBadResponse, limit)
	}
	return b, nil
}

// transportError classifies a failed exchange. A refused certificate on
// either side is not a reachability problem: retrying will not fix it, but
// the caller still sees it as the node being unusable, so it wraps both.
func transportError(err error) error {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) {
		return &Error{Err: fmt.Errorf("%w: %w: %w", ErrUnreachable, ErrUntrustedAgent, err)}
	}
	return &Error{Err: fmt.Errorf("%w: %w", ErrUnreachable, err)}
}

// decodeError turns an error answer into *messages.Error with the agent's
// code and a kind from the status; 5xx answers also wrap ErrAgentUnavailable
// so callers can retry them.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	me := &messages.Error{Kind: apierror.KindOf(resp.StatusCode), Code: "agent_error",
		Message: fmt.Sprintf("agent answered %s", resp.Status)}
	if d, ok := apierror.Parse(b); ok {
		me.Code, me.Message, me.Details = d.Code, d.Message, d.Details
	}
	e := &Error{Status: resp.StatusCode, Err: me}
	if resp.StatusCode >= 500 {
		e.Err = fmt.Errorf("%w: %w", ErrAgentUnavailable, me)
	}
	return e
}
