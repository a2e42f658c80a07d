package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// Bounds of a question to the other replicas for their VM samples.
const (
	// peerMetricsTimeout bounds the whole question: a replica that is
	// down, paused or partitioned costs an answer at most this much, and
	// is left out of it.
	peerMetricsTimeout = time.Second
	// peerMetricsMaxBytes bounds one replica's answer: 512 samples of
	// ~4.2 KB at most per node (messages.MaxMetricsVMs), for some
	// hundreds of nodes.
	peerMetricsMaxBytes = 256 << 20
	// peerListTTL is how long the list of replicas to ask is reused.
	peerListTTL = 5 * time.Second
)

// peerMetrics asks the other replicas, on their agent listeners, for the
// VM samples of the heartbeats they received (GET /v1/cluster/node-metrics),
// presenting this replica's peer certificate: only replicas may ask. It is
// gateway.PeerMetrics.
type peerMetrics struct {
	self   string
	st     *store.Store
	client *http.Client
	log    *slog.Logger

	mu      sync.Mutex
	urls    []string
	listed  time.Time
	listErr error
}

// newPeerMetrics asks as replica self, with the peer certificate in files
// (re-read at each handshake: it is renewed while the replica runs), trusting
// the cluster CA in roots.
func newPeerMetrics(self string, st *store.Store, files *etcd.PeerTLS, roots *x509.CertPool, log *slog.Logger) *peerMetrics {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // replica to replica: never through a proxy
	tr.TLSClientConfig = &tls.Config{
		RootCAs:    roots,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
			return &c, err
		},
	}
	tr.MaxIdleConnsPerHost = 4
	return &peerMetrics{self: self, st: st, client: &http.Client{Transport: tr}, log: log}
}

// peers are the agent URLs of the other serving replicas, read again every
// peerListTTL.
func (p *peerMetrics) peers(ctx context.Context) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.listed) < peerListTTL {
		return p.urls
	}
	rows, err := p.st.ServingReplicas(ctx)
	if err != nil {
		if p.listErr == nil {
			p.log.Warn("node metrics: list the replicas to ask", "err", err)
		}
		p.listErr = err
		return p.urls // the last list, rather than none
	}
	p.listErr = nil
	p.urls = p.urls[:0]
	for _, r := range rows {
		if r.Name != p.self && r.AgentURL != "" {
			p.urls = append(p.urls, r.AgentURL)
		}
	}
	p.listed = time.Now()
	return p.urls
}

// HeldNodeMetrics asks every other replica at once and returns all their
// answers together; one that fails or is late is left out (logged at debug:
// a replica down is the normal case this tolerates).
func (p *peerMetrics) HeldNodeMetrics(ctx context.Context, node string) []messages.HeldNodeMetrics {
	urls := p.peers(ctx)
	if len(urls) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, peerMetricsTimeout)
	defer cancel()
	var (
		mu  sync.Mutex
		out []messages.HeldNodeMetrics
		wg  sync.WaitGroup
	)
	for _, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items, err := p.ask(ctx, u, node)
			if err != nil {
				p.log.Debug("node metrics: a replica did not answer", "replica", u, "err", err)
				return
			}
			mu.Lock()
			out = append(out, items...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func (p *peerMetrics) ask(ctx context.Context, base, node string) ([]messages.HeldNodeMetrics, error) {
	u := base + "/v1/cluster/node-metrics"
	if node != "" {
		u += "?node=" + url.QueryEscape(node)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("%s: %d %s", u, resp.StatusCode, b)
	}
	var l messages.HeldNodeMetricsList
	if err := json.NewDecoder(io.LimitReader(resp.Body, peerMetricsMaxBytes)).Decode(&l); err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return l.Items, nil
}
