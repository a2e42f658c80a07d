// Package heartbeat is the agent's side of POST /v1/heartbeat: a loop that
// reports the node's observed state over mutual TLS and receives the
// desired state and the interval to use for the next beat.
package heartbeat

import (
	"github.com/otherix/otherix/http/apierror"

	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/otherix/otherix/http/failover"
	"github.com/otherix/otherix/messages"
)

// Path is the heartbeat endpoint on the agent-facing listener.
const Path = "/v1/heartbeat"

// Defaults of a Loop whose fields are zero.
const (
	// DefaultInterval is used until the control plane names one.
	DefaultInterval = 30 * time.Second
	// DefaultMinBackoff is the first retry delay after a failure; it
	// doubles up to the current interval.
	DefaultMinBackoff = time.Second
	// DefaultRequestTimeout bounds one POST (NewClient's Client.Timeout).
	DefaultRequestTimeout = 10 * time.Second
	// JitterFraction is the ± spread of every wait, so a fleet that
	// restarted together does not beat in lockstep.
	JitterFraction = 0.10

	// minInterval and maxInterval clamp what a response may ask for.
	minInterval = time.Second
	maxInterval = time.Hour
	// MaxResponseBytes bounds what is read of an answer. The answer grows
	// with the cluster: the overlay's forwarding database holds every VM
	// on this node's overlay networks (91 bytes each) and its peers every
	// node (195 bytes each), so 1 MiB ran out at about 11,000 VMs; 16 MiB
	// holds 100,000 VMs and 10,000 nodes with room to spare. Unchanged
	// overlays are not resent (overlay_revision), so this is a first or
	// changed answer's size, not every beat's.
	MaxResponseBytes = 16 << 20
)

// Error codes of the heartbeat endpoint's error envelope that the agent
// branches on or explains.
const (
	CodeUnknownField = "unknown_field" // 400: details.field names it
)

// ServerError is a refusal by the control plane, decoded from its error
// envelope; errors.Is matches another *ServerError by Code.
type ServerError = apierror.Error

// NewClient returns an HTTP client for server that presents cert (mutual
// TLS), trusts only roots, verifies the server certificate against the
// host of server, and follows no redirects.
func NewClient(cert tls.Certificate, roots *x509.CertPool, server string) (*http.Client, error) {
	return NewRotatingClient(func() *tls.Certificate { return &cert }, roots, server)
}

// NewRotatingClient is NewClient presenting whatever cert returns at each
// handshake, so a renewed node certificate is used without a restart.
func NewRotatingClient(cert func() *tls.Certificate, roots *x509.CertPool, server string) (*http.Client, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("heartbeat: server %q is not an https URL", server)
	}
	return &http.Client{
		Timeout:       DefaultRequestTimeout,
		Transport:     newTransport(cert, roots),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// Per-replica bounds of a failover client: a replica whose host is down is
// given up on after these, leaving the rest of DefaultRequestTimeout to the
// next one.
const (
	failoverDialTimeout      = 3 * time.Second
	failoverHandshakeTimeout = 4 * time.Second
)

// NewFailoverClient is NewRotatingClient over several control-plane
// replicas (their agent-facing URLs, the first tried first): a request that
// cannot reach one goes to the next (package failover), and a heartbeat,
// which is safe to repeat, also moves on a broken connection or a 503
// no_quorum. The transport is returned so that the caller can replace the
// list (SetServers) as heartbeat answers name the replicas.
func NewFailoverClient(cert func() *tls.Certificate, roots *x509.CertPool, servers []string) (*http.Client, *failover.Transport, error) {
	us, err := failover.ParseServers(servers)
	if err != nil {
		return nil, nil, fmt.Errorf("heartbeat: %w", err)
	}
	for _, u := range us {
		if u.Scheme != "https" {
			return nil, nil, fmt.Errorf("heartbeat: server %q is not an https URL", u)
		}
	}
	base := newTransport(cert, roots)
	base.DialContext = (&net.Dialer{Timeout: failoverDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	base.TLSHandshakeTimeout = failoverHandshakeTimeout
	fo, err := failover.New(base, servers)
	if err != nil {
		return nil, nil, fmt.Errorf("heartbeat: %w", err)
	}
	return &http.Client{
		Timeout:       DefaultRequestTimeout,
		Transport:     fo,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, fo, nil
}

// newTransport presents cert and trusts only roots. The server name checked
// is each request's host (no fixed ServerName), so one transport serves
// every replica.
func newTransport(cert func() *tls.Certificate, roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return cert(), nil
			},
			RootCAs:    roots,
			MinVersion: tls.VersionTLS12,
		},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     2 * time.Minute,
	}
}

// URL returns the heartbeat URL of the agent-facing server URL.
func URL(server string) string {
	return strings.TrimRight(server, "/") + Path
}

// Normalize replaces nil slices of hb with empty ones, so they encode as []
// rather than null.
func Normalize(hb *messages.Heartbeat) {
	if hb.QEMUVersions == nil {
		hb.QEMUVersions = []string{}
	}
	if hb.Pools == nil {
		hb.Pools = []messages.PoolStatus{}
	}
	if hb.VMs == nil {
		hb.VMs = []messages.VMObserved{}
	}
	if hb.Images == nil {
		hb.Images = []messages.CachedImage{}
	}
}

// Jitter spreads d uniformly over [d-10%, d+10%] using r in [0,1).
func Jitter(d time.Duration, r float64) time.Duration {
	return d + time.Duration(float64(d)*JitterFraction*(2*r-1))
}

// Status is the loop's last outcome, for logs and diagnostics.
type Status struct {
	// OK is whether the last attempt succeeded.
	OK bool
	// Successes and Failures count attempts since Run started;
	// ConsecutiveFailures counts those since the last success.
	Successes, Failures, ConsecutiveFailures int
	// LastAttempt and LastSuccess are when they ended (zero: never).
	LastAttempt, LastSuccess time.Time
	// LastError is the last failure's error (nil after a success).
	LastError error
	// Interval is the interval in force (the control plane's, once it
	// answered).
	Interval time.Duration
	// OmittedVMs and OmittedImages are what the last report left out to
	// stay within the body limit (see Fitter).
	OmittedVMs, OmittedImages int
	// OmittedVMMetrics is how many VM samples the last report left out.
	OmittedVMMetrics int
}

// Loop posts heartbeats until its context ends. Set the exported fields
// before Run; Status may be called concurrently with Run.
type Loop struct {
	// Client carries the mutual TLS (see NewClient). Required.
	Client *http.Client
	// URL is the full heartbeat URL (see URL). Required.
	URL string
	// Observe returns the node's observed state for one beat. Required.
	Observe func(ctx context.Context) messages.Heartbeat
	// OnDesired, if set, receives the desired state of each good answer.
	OnDesired func(messages.DesiredState)
	// OnReplicas, if set, receives the replicas' agent URLs of each good
	// answer that names them.
	OnReplicas func([]string)
	// Log receives the changes of state: first success, a new kind of
	// failure, recovery. nil means slog.Default().
	Log *slog.Logger

	// DefaultInterval is the interval until the first answer (0:
	// DefaultInterval); MinBackoff is the first retry delay (0:
	// DefaultMinBackoff). Rand returns a number in [0,1) for the jitter
	// (nil: math/rand/v2). Seams for tests.
	DefaultInterval time.Duration
	MinBackoff      time.Duration
	Rand            func() float64
	// Fit keeps each report within the control plane's body limit (see
	// Fitter); its zero value uses messages.HeartbeatMaxBytes.
	Fit Fitter

	mu     sync.Mutex
	status Status
	// wake cuts the current wait short (see Wake); made by Run.
	wakeOnce sync.Once
	wake     chan struct{}
}

// Wake asks for the next heartbeat now rather than after the interval: a
// part of the agent that needs fresh desired state (a VM's network) calls
// it. Wakes that arrive while one is pending are merged; it never blocks.
func (l *Loop) Wake() {
	select {
	case l.wakeCh() <- struct{}{}:
	default:
	}
}

func (l *Loop) wakeCh() chan struct{} {
	l.wakeOnce.Do(func() { l.wake = make(chan struct{}, 1) })
	return l.wake
}

// Status returns a copy of the last outcome.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// Run posts a heartbeat immediately, then again one jittered interval after
// each answer, using the interval the control plane last named. After a
// failure it retries after a backoff of MinBackoff doubling up to the
// interval (jittered too). It logs each change of state once — not every
// failed beat — and never gives up: it returns ctx.Err() when ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	if l.Client == nil || l.URL == "" || l.Observe == nil {
		return errors.New("heartbeat: Loop needs Client, URL and Observe")
	}
	log := l.Log
	if log == nil {
		log = slog.Default()
	}
	interval := l.DefaultInterval
	if interval <= 0 {
		interval = DefaultInterval
	}
	minBackoff := l.MinBackoff
	if minBackoff <= 0 {
		minBackoff = DefaultMinBackoff
	}
	rnd := l.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	l.mu.Lock()
	l.status = Status{Interval: interval}
	l.mu.Unlock()

	var backoff time.Duration
	var lastErrKey string
	everOK, partial := false, false
	for {
		resp, err := l.Beat(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if st := l.Status(); (st.OmittedVMs+st.OmittedImages > 0) != partial {
			partial = !partial
			if partial {
				log.Warn("heartbeat over its size budget: reporting part of the node", "omitted_vms", st.OmittedVMs,
					"omitted_images", st.OmittedImages, "budget_bytes", cmp.Or(l.Fit.Budget, messages.HeartbeatMaxBytes))
			} else {
				log.Info("heartbeat within its size budget again")
			}
		}
		now := time.Now()
		var wait time.Duration
		if err != nil {
			backoff = nextBackoff(backoff, minBackoff, interval)
			wait = backoff
			st := l.record(func(s *Status) {
				s.OK, s.LastAttempt, s.LastError = false, now, err
				s.Failures++
				s.ConsecutiveFailures++
			})
			if key := errKey(err); key != lastErrKey {
				lastErrKey = key
				attrs := []any{"url", l.URL, "error", err.Error(), "consecutive_failures", st.ConsecutiveFailures, "retry_in", backoff.Round(time.Millisecond).String()}
				var se *ServerError
				if errors.As(err, &se) {
					attrs = append(attrs, "status", se.Status, "code", se.Code, "message", se.Message)
					if f, ok := se.Details["field"]; ok {
						attrs = append(attrs, "field", f)
					}
				}
				log.Warn("heartbeat failing", attrs...)
			}
		} else {
			if resp.IntervalSeconds > 0 {
				interval = clampInterval(time.Duration(resp.IntervalSeconds) * time.Second)
			}
			wait = interval
			prev := l.Status()
			l.record(func(s *Status) {
				s.OK, s.LastAttempt, s.LastSuccess, s.LastError = true, now, now, nil
				s.Successes++
				s.ConsecutiveFailures = 0
				s.Interval = interval
			})
			switch {
			case !everOK:
				log.Info("heartbeat accepted", "url", l.URL, "interval", interval.String(), "after_failures", prev.ConsecutiveFailures)
			case prev.ConsecutiveFailures > 0:
				log.Info("heartbeat recovered", "url", l.URL, "interval", interval.String(), "after_failures", prev.ConsecutiveFailures,
					"down_for", now.Sub(prev.LastSuccess).Round(time.Second).String())
			case prev.Interval != interval:
				log.Info("heartbeat interval changed", "from", prev.Interval.String(), "to", interval.String())
			}
			everOK = true
			backoff, lastErrKey = 0, ""
			if l.OnDesired != nil {
				l.OnDesired(resp.Desired)
			}
			if l.OnReplicas != nil && len(resp.ReplicaURLs) > 0 {
				l.OnReplicas(resp.ReplicaURLs)
			}
		}
		t := time.NewTimer(Jitter(wait, rnd()))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-l.wakeCh():
			t.Stop()
		}
	}
}

func (l *Loop) record(f func(*Status)) Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.status)
	return l.status
}

// Beat posts one heartbeat and decodes the answer. A refusal is a
// *ServerError.
func (l *Loop) Beat(ctx context.Context) (messages.HeartbeatResponse, error) {
	var out messages.HeartbeatResponse
	body, sent, err := l.Fit.Encode(l.Observe(ctx))
	if err != nil {
		return out, err
	}
	l.record(func(s *Status) {
		s.OmittedVMs, s.OmittedImages, s.OmittedVMMetrics = sent.OmittedVMs, sent.OmittedImages, sent.OmittedVMMetrics
	})
	// A heartbeat is a report answered with state: sending it again, to
	// another replica, does no harm.
	req, err := http.NewRequestWithContext(failover.Repeatable(ctx), http.MethodPost, l.URL, bytes.NewReader(body))
	if err != nil {
		return out, fmt.Errorf("heartbeat: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := l.Client.Do(req)
	if err != nil {
		return out, fmt.Errorf("heartbeat: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return out, fmt.Errorf("heartbeat: read answer: %w", err)
	}
	if len(raw) > MaxResponseBytes {
		return out, fmt.Errorf("heartbeat: answer larger than %d bytes", MaxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return out, serverError(resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("heartbeat: decode answer: %w", err)
	}
	return out, nil
}

// nextBackoff doubles prev from min, capped at max.
func nextBackoff(prev, min, max time.Duration) time.Duration {
	next := prev * 2
	if prev == 0 {
		next = min
	}
	if next > max {
		next = max
	}
	return next
}

func clampInterval(d time.Duration) time.Duration {
	return max(minInterval, min(d, maxInterval))
}

// errKey identifies a kind of failure, so a repeat is not logged again.
func errKey(err error) string {
	var se *ServerError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %s %s", se.Status, se.Code, se.Message)
	}
	return err.Error()
}

// serverError decodes the error envelope. A refused certificate gets a hint,
// since that is what an operator sees after re-enrolling or deleting a node.
func serverError(status int, body []byte) error {
	e := apierror.Decode(status, body)
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		return fmt.Errorf("%w; the node certificate was not accepted (node deleted or re-enrolled elsewhere? see otherix-agent bootstrap --force)", e)
	}
	return e
}
