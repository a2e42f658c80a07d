package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/security"
)

// Per-replica bounds when a context lists several replicas: a replica whose
// host is down (no refusal comes back) is given up on after these, and the
// next one is tried within the same --timeout.
const (
	failoverDialTimeout      = 3 * time.Second
	failoverHandshakeTimeout = 5 * time.Second
	// endpointsTimeout bounds the best-effort read of the replica list
	// after a login or a session refresh.
	endpointsTimeout = 5 * time.Second
)

// failoverOptions returns the client options that spread a call of cx over
// its replicas: an HTTP client that trusts what cx trusts and whose dials
// and TLS handshakes give up quickly, and the failover itself, which notes
// each change of replica on stderr and points error messages at the replica
// in use. They go after transportOptions' and replace its HTTP client.
func (a *app) failoverOptions(cx *cliContext) ([]client.Option, error) {
	ca, err := contextCA(cx)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if ca != nil {
		tr = pinnedHTTPClient(ca, a.sessionCache(security.Fingerprint(ca))).Transport.(*http.Transport)
	}
	tr.DialContext = (&net.Dialer{Timeout: failoverDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = failoverHandshakeTimeout
	return []client.Option{
		client.WithHTTPClient(&http.Client{Transport: tr}),
		client.WithFailover(cx.Servers, func(from, to string) {
			a.server = to
			fmt.Fprintf(a.stderr, "note: %s did not answer (in time); using replica %s\n", from, to)
		}),
	}, nil
}

// learnReplicas asks c for the replicas' API URLs, best effort: a server
// that does not know the endpoint (an older one) or a single replica leaves
// the list empty. The list always holds server itself.
func (a *app) learnReplicas(ctx context.Context, c *client.Client, server string) []string {
	ctx, cancel := context.WithTimeout(ctx, min(a.timeout, endpointsTimeout))
	defer cancel()
	urls, err := c.ClusterEndpoints(ctx)
	if err != nil {
		return nil
	}
	urls = acceptReplicas(server, urls)
	if len(urls) == 0 {
		return nil
	}
	if !slices.Contains(urls, server) {
		urls = append([]string{server}, urls...)
	}
	return urls
}

// acceptReplicas keeps the replica URLs credentials for server may go to:
// the scheme of server only (a context pinned for https never falls back to
// plain http), and plain http to a remote host only if server itself is one,
// which login accepted only with --insecure.
func acceptReplicas(server string, urls []string) []string {
	var out []string
	for _, u := range urls {
		switch {
		case isHTTPS(u) != isHTTPS(server):
		case !isHTTPS(u) && cleartextToRemote(u) && !cleartextToRemote(server):
		default:
			out = append(out, u)
		}
	}
	return out
}

// refreshReplicas learns the replica list again after a session refresh,
// from the replica that just answered it, with the new access token. It
// uses a client of its own: the process's client is inside its refresh, and
// a 401 there would refresh again.
func (a *app) refreshReplicas(ctx context.Context, cx *cliContext, server, access string) []string {
	pinned := a.pinnedCA
	opts, err := a.transportOptions(cx)
	a.pinnedCA = pinned
	if err != nil {
		return nil
	}
	c, err := client.New(server, append(opts, client.WithToken(access))...)
	if err != nil {
		return nil
	}
	return a.learnReplicas(ctx, c, cx.Server)
}
