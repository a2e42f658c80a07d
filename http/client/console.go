package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/messages"
)

// ConsoleToken asks for a single-use console token for VM ref
// (POST /v1/vms/{id}/console). It expires after messages.ConsoleTokenTTL.
func (c *Client) ConsoleToken(ctx context.Context, ref string, req messages.ConsoleTokenRequest, opts ...CallOption) (*messages.ConsoleToken, error) {
	var tok messages.ConsoleToken
	if _, err := c.do(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(ref)+"/console", nil, req, &tok, opts); err != nil {
		return nil, err
	}
	return &tok, nil
}

// DialConsole opens the console WebSocket a token grants, with the client's
// TLS settings (a pinned CA, for the CLI). A refusal before the upgrade (bad
// token, console_busy, vm_not_running) is an *APIError as for every call.
// The caller owns the connection; its read limit is messages.ConsoleMaxFrame.
func (c *Client) DialConsole(ctx context.Context, tok *messages.ConsoleToken) (*websocket.Conn, error) {
	rel, err := url.Parse(tok.URL)
	if err != nil || rel.IsAbs() || !strings.HasPrefix(rel.Path, "/") {
		return nil, fmt.Errorf("console url %q: want a path relative to the API", tok.URL)
	}
	// The replica that issued the token: the one that just answered.
	u := *c.current()
	u.Path, u.RawPath, u.RawQuery = strings.TrimRight(u.Path, "/")+rel.Path, "", rel.RawQuery
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	d := websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: 30 * time.Second,
		ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10}
	if tr, ok := c.transport().(*http.Transport); ok && tr.TLSClientConfig != nil {
		d.TLSClientConfig = tr.TLSClientConfig.Clone()
		// The WebSocket handshake is HTTP/1.1.
		d.TLSClientConfig.NextProtos = nil
	}
	conn, resp, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			var raw []byte
			if resp.Body != nil {
				raw, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			}
			return nil, decodeAPIError(resp, raw)
		}
		return nil, fmt.Errorf("open console: %w", err)
	}
	conn.SetReadLimit(messages.ConsoleMaxFrame)
	return conn, nil
}
