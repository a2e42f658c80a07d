package agentclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/internal/requestid"
	"github.com/otherix/otherix/messages"
)

// ConsoleDialTimeout bounds the dial, TLS and WebSocket handshake with an
// agent's console.
const ConsoleDialTimeout = 10 * time.Second

// Console opens the serial console of VM id on its node as a WebSocket
// (GET /v1/vms/{id}/console?mode=&force= on the agent's mutual-TLS API).
// An agent that refuses before the upgrade (vm_not_found, vm_not_running,
// console_busy) answers as the other calls do: an *Error wrapping the
// agent's *messages.Error. The caller owns the connection; its read limit is
// messages.ConsoleMaxFrame.
func (c *Client) Console(ctx context.Context, n Node, id, mode string, force bool) (*websocket.Conn, error) {
	base, err := endpoint(n)
	if err != nil {
		return nil, err
	}
	u := base.JoinPath("/v1/vms/" + url.PathEscape(id) + "/console")
	u.Scheme = "wss"
	q := url.Values{}
	q.Set("mode", mode)
	q.Set("force", strconv.FormatBool(force))
	u.RawQuery = q.Encode()
	d := websocket.Dialer{
		Proxy:            nil, // agents are called directly, as for every other call
		NetDialContext:   (&net.Dialer{Timeout: ConsoleDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		HandshakeTimeout: ConsoleDialTimeout,
		TLSClientConfig:  c.tlsConfig(n.Name),
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  16 << 10,
	}
	ctx, cancel := context.WithTimeout(ctx, ConsoleDialTimeout)
	defer cancel()
	var h http.Header
	if rid := requestid.From(ctx); rid != "" {
		h = http.Header{requestid.Header: {rid}}
	}
	conn, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			// gorilla keeps up to 1 KiB of the answer's body: enough for the
			// error envelope.
			if resp.Body == nil {
				resp.Body = io.NopCloser(bytes.NewReader(nil))
			}
			return nil, fmt.Errorf("console of vm %s on node %s: %w", id, n.Name, decodeError(resp))
		}
		return nil, fmt.Errorf("console of vm %s on node %s: %w", id, n.Name, transportError(err))
	}
	conn.SetReadLimit(messages.ConsoleMaxFrame)
	return conn, nil
}

// tlsConfig is the mutual-TLS configuration of calls to node name: the
// agent's certificate must chain to the cluster CA and name the node; the
// control plane presents its client certificate, asked anew per handshake.
func (c *Client) tlsConfig(name string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    c.roots,
		ServerName: name,
		// A WebSocket upgrade is HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.clientCert()
		},
	}
}
