// Package failover is an http.RoundTripper that spreads one logical service
// over its replicas: the CLI and the SDK use it for the control plane's REST
// API, the agent for its agent-facing listeners. Requests are addressed to
// any one replica's URL; the transport sends each to the replica it last
// succeeded with (sticky), and moves to the next one only when that is safe:
//
//   - the request never reached a server (no connection was obtained: a dial
//     error, a refused connection, a dial or TLS handshake timeout, a TLS
//     handshake with a host that died): any request moves;
//   - the server answered 503 not_ready (a learner, a replica still
//     starting: it did nothing): any request moves;
//   - the server answered any other 503 (no_quorum, an etcd that did not
//     answer during an election), or the connection broke after it was
//     obtained: only an idempotent request moves (GET, HEAD, OPTIONS, one
//     carrying an Idempotency-Key, or one whose context is Repeatable). A
//     write without a key may have been proposed to Raft and applied after
//     all, so sending it again could apply it twice; its error or answer
//     goes back to the caller.
//
// When every replica failed that way, Rounds > 1 tries them all again after
// a pause (Backoff, doubling), for a cluster that is electing a leader. The
// caller's context bounds the whole: once it ends no replica is tried.
package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/http/apierror"
)

// Error codes of a 503 answer the transport tells apart.
const (
	CodeNotReady = "not_ready" // the replica serves nothing yet: any request moves
	CodeNoQuorum = "no_quorum" // the replica lost quorum: idempotent requests move
)

// DefaultBackoff is the first pause between rounds.
const DefaultBackoff = 250 * time.Millisecond

// MaxServers bounds a replica list: more than any control plane has (etcd
// advises at most seven voters), few enough that trying all stays quick.
const MaxServers = 16

// maxPeek bounds what is read of a 503 answer to learn its code; the error
// envelope is a few hundred bytes.
const maxPeek = 64 << 10

// ErrNoServers is the error of a list without a usable URL.
var ErrNoServers = errors.New("failover: no server URL")

// Transport sends each request to one replica, moving to the next when that
// is safe (see the package documentation). It is safe for concurrent use.
type Transport struct {
	// Base does the sending; nil means http.DefaultTransport.
	Base http.RoundTripper
	// OnSwitch, if set, is called (outside any lock) when the sticky replica
	// changes: from is the replica that failed, to the one that answered.
	OnSwitch func(from, to string)
	// Rounds is how many times the whole list may be tried for one request
	// (0 and 1: once). Backoff is the pause before the second round,
	// doubling for each later one (0: DefaultBackoff).
	Rounds  int
	Backoff time.Duration
	// HedgeAfter, when positive, makes a write with an Idempotency-Key that
	// has no answer after this long go to the next replica as well, the
	// first attempt still running: a follower whose proposal went to a
	// leader that just died waits out etcd's whole request timeout (7 s)
	// before it answers. The server runs the key once, so the first
	// attempt to answer with anything but 409 idempotency_in_progress (or
	// a 503 or broken connection, which move on as above) wins and the
	// others are cancelled. Reads are never hedged: a long poll is slow on
	// purpose.
	HedgeAfter time.Duration

	mu      sync.Mutex
	servers []*url.URL
	cur     int // index into servers of the sticky replica
}

// New returns a transport over servers, in order (the first is tried first).
func New(base http.RoundTripper, servers []string) (*Transport, error) {
	t := &Transport{Base: base}
	if err := t.SetServers(servers); err != nil {
		return nil, err
	}
	return t, nil
}

// ParseServers checks and normalises a replica list: http(s)://host[:port]
// without a path, duplicates and empty entries dropped, at most MaxServers.
func ParseServers(servers []string) ([]*url.URL, error) {
	var out []*url.URL
	seen := map[string]bool{}
	for _, s := range servers {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("failover: server %q: want http(s)://host[:port]", s)
		}
		key := u.Scheme + "://" + strings.ToLower(u.Host)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, &url.URL{Scheme: u.Scheme, Host: u.Host})
		if len(out) > MaxServers {
			return nil, fmt.Errorf("failover: more than %d servers", MaxServers)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoServers
	}
	return out, nil
}

// SetServers replaces the replica list. The sticky replica stays current if
// it is still listed; otherwise the first of the new list is.
func (t *Transport) SetServers(servers []string) error {
	us, err := ParseServers(servers)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := 0
	if len(t.servers) > 0 {
		old := t.servers[t.cur].String()
		for i, u := range us {
			if u.String() == old {
				cur = i
			}
		}
	}
	t.servers, t.cur = us, cur
	return nil
}

// Servers returns the replica list in its order.
func (t *Transport) Servers() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, len(t.servers))
	for i, u := range t.servers {
		out[i] = u.String()
	}
	return out
}

// Current returns the sticky replica's URL: where the next request goes
// first.
func (t *Transport) Current() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.servers[t.cur].String()
}

// CloseIdleConnections closes the idle connections of the base transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base().(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// repeatableKey marks a context whose requests are safe to send twice.
type repeatableKey struct{}

// Repeatable returns a context whose requests the transport treats as
// idempotent whatever their method: a POST whose repetition does no harm,
// such as an agent's heartbeat (a report of state, answered with state).
func Repeatable(ctx context.Context) context.Context {
	return context.WithValue(ctx, repeatableKey{}, true)
}

// Idempotent reports whether req may be sent again after it may have
// reached a server: a read, a write the server deduplicates by its
// Idempotency-Key, or a request whose context is Repeatable.
func Idempotent(req *http.Request) bool {
	if v, _ := req.Context().Value(repeatableKey{}).(bool); v {
		return true
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != ""
}

// Attempt is one replica tried for a request and why it was left.
type Attempt struct {
	Server string
	Err    error
}

// Error is the error of a request no replica took: every attempt, in order.
// It unwraps to the last attempt's error, so errors.Is finds, say,
// syscall.ECONNREFUSED.
type Error struct {
	Attempts []Attempt
}

func (e *Error) Error() string {
	if len(e.Attempts) == 1 {
		return e.Attempts[0].Err.Error()
	}
	parts := make([]string, len(e.Attempts))
	for i, a := range e.Attempts {
		parts[i] = a.Server + ": " + a.Err.Error()
	}
	return fmt.Sprintf("no replica of %d answered: %s", len(e.Attempts), strings.Join(parts, "; "))
}

func (e *Error) Unwrap() error { return e.Attempts[len(e.Attempts)-1].Err }

// RoundTrip sends req to the sticky replica, then to the next ones as the
// package documentation says. The URL's scheme and host are replaced by the
// replica's; its path and query are kept.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	servers, start := t.servers, t.cur
	t.mu.Unlock()
	if len(servers) == 0 {
		closeBody(req)
		return nil, ErrNoServers
	}
	idem := Idempotent(req)
	// A body that cannot be produced again allows one attempt only.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	rounds, pause := max(t.Rounds, 1), t.Backoff
	if pause <= 0 {
		pause = DefaultBackoff
	}
	var tried []Attempt
	if t.HedgeAfter > 0 && hedgeable(req) {
		return t.hedged(req, servers, start, rounds, pause)
	}
	n := 0 // attempts so far
	for round := 0; round < rounds; round++ {
		if round > 0 {
			timer := time.NewTimer(pause)
			select {
			case <-req.Context().Done():
				timer.Stop()
				return nil, &Error{Attempts: append(tried, Attempt{Server: "(waiting)", Err: req.Context().Err()})}
			case <-timer.C:
			}
			pause *= 2
		}
		for i := range servers {
			idx := (start + i) % len(servers)
			target := servers[idx]
			var connected atomic.Bool
			ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
			})
			r := req.Clone(ctx)
			r.URL.Scheme, r.URL.Host, r.Host = target.Scheme, target.Host, ""
			if n > 0 && req.GetBody != nil {
				b, err := req.GetBody()
				if err != nil {
					return nil, fmt.Errorf("failover: replay body: %w", err)
				}
				r.Body = b
			}
			n++
			last := !replayable || round == rounds-1 && i == len(servers)-1
			resp, err := t.base().RoundTrip(r)
			if err != nil {
				tried = append(tried, Attempt{Server: target.String(), Err: err})
				// Once the caller gave up, or the request may have been
				// acted on and may not be repeated, stop here.
				if last || req.Context().Err() != nil || (connected.Load() && !idem) {
					return nil, &Error{Attempts: tried}
				}
				continue
			}
			if resp.StatusCode == http.StatusServiceUnavailable && !last {
				code, replay := peekCode(resp)
				if code == CodeNotReady || idem {
					resp.Body.Close()
					tried = append(tried, Attempt{Server: target.String(), Err: fmt.Errorf("503 %s", code)})
					continue
				}
				resp.Body = replay
			}
			if idx != start {
				t.switchTo(servers, start, idx)
			}
			return resp, nil
		}
	}
	// Unreachable: the last attempt always returns.
	return nil, &Error{Attempts: tried}
}

// hedgeable reports whether req may be hedged: a write the server runs
// once by its Idempotency-Key, with a body that can be produced again.
func hedgeable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return req.Header.Get("Idempotency-Key") != "" &&
		(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
}

// codeInProgress is the 409 of a key whose first request still runs.
const codeInProgress = "idempotency_in_progress"

// outcome is one hedged attempt's result.
type outcome struct {
	attempt, idx int
	resp         *http.Response
	err          error
	cancel       context.CancelFunc
}

// hedged is RoundTrip for a hedgeable request, in rounds of hedgedRound.
func (t *Transport) hedged(req *http.Request, servers []*url.URL, start, rounds int, pause time.Duration) (*http.Response, error) {
	closeBody(req) // every attempt sends a copy from GetBody
	var tried []Attempt
	for round := 0; round < rounds; round++ {
		if round > 0 {
			timer := time.NewTimer(pause)
			select {
			case <-req.Context().Done():
				timer.Stop()
				return nil, &Error{Attempts: append(tried, Attempt{Server: "(waiting)", Err: req.Context().Err()})}
			case <-timer.C:
			}
			pause *= 2
		}
		resp, err, final := t.hedgedRound(req, servers, start, &tried)
		if final || round == rounds-1 {
			if err != nil {
				return nil, err
			}
			return resp, nil
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	return nil, &Error{Attempts: tried} // unreachable: the last round returns
}

// hedgedRound runs one round of hedged attempts. Whenever the running ones
// have not answered for HedgeAfter, or one failed in a way that lets the
// request move, another starts at the next replica in turn, the sticky one
// first, wrapping around: a replica whose first attempt is stuck (its
// proposal went to a dead leader) is asked again once it may have a new
// one. At most twice as many attempts as replicas. final says the answer
// (or error) is the caller's; otherwise every attempt failed in a way that
// moves, and resp, when set, is the last 503 answer.
func (t *Transport) hedgedRound(req *http.Request, servers []*url.URL, start int, tried *[]Attempt) (*http.Response, error, bool) {
	n := len(servers)
	limit := 2 * n
	results := make(chan outcome, limit)
	var cancels []context.CancelFunc // by attempt
	pending := 0
	launch := func() error {
		a := len(cancels)
		idx := (start + a) % n
		ctx, cancel := context.WithCancel(req.Context())
		r := req.Clone(ctx)
		r.URL.Scheme, r.URL.Host, r.Host = servers[idx].Scheme, servers[idx].Host, ""
		if req.GetBody != nil {
			b, err := req.GetBody()
			if err != nil {
				cancel()
				return fmt.Errorf("failover: replay body: %w", err)
			}
			r.Body = b
		}
		cancels = append(cancels, cancel)
		pending++
		go func() {
			resp, err := t.base().RoundTrip(r)
			results <- outcome{attempt: a, idx: idx, resp: resp, err: err, cancel: cancel}
		}()
		return nil
	}
	// finish cancels the attempts still running, but keep, and closes
	// whatever they answer later.
	finish := func(keep int) {
		for a, c := range cancels {
			if a != keep {
				c()
			}
		}
		go func(left int) {
			for ; left > 0; left-- {
				if o := <-results; o.resp != nil {
					o.resp.Body.Close()
				}
			}
		}(pending)
	}
	if err := launch(); err != nil {
		return nil, err, true
	}
	timer := time.NewTimer(t.HedgeAfter)
	defer timer.Stop()
	var held, last503 *outcome
	drop := func(o *outcome) {
		if o != nil {
			o.resp.Body.Close()
			o.cancel()
		}
	}
	for {
		select {
		case <-timer.C:
			if len(cancels) < limit {
				if err := launch(); err != nil {
					finish(-1)
					return nil, err, true
				}
				timer.Reset(t.HedgeAfter)
			}
			continue
		case <-req.Context().Done():
			finish(-1)
			drop(held)
			drop(last503)
			return nil, &Error{Attempts: append(*tried, Attempt{Server: "(waiting)", Err: req.Context().Err()})}, true
		case o := <-results:
			pending--
			target := servers[o.idx].String()
			switch {
			case o.err != nil:
				*tried = append(*tried, Attempt{Server: target, Err: o.err})
				o.cancel()
			case o.resp.StatusCode == http.StatusServiceUnavailable:
				code, replay := peekCode(o.resp)
				o.resp.Body = replay
				*tried = append(*tried, Attempt{Server: target, Err: fmt.Errorf("503 %s", code)})
				drop(last503)
				last503 = &o
			case o.resp.StatusCode == http.StatusConflict && (pending > 0 || len(cancels) < limit) && func() bool {
				code, replay := peekCode(o.resp)
				o.resp.Body = replay
				return code == codeInProgress
			}():
				// Another attempt holds the key: wait for it (or for a
				// replica that answers otherwise).
				drop(held)
				held = &o
				continue // not a failure: no new attempt for it
			default:
				finish(o.attempt)
				drop(held)
				drop(last503)
				if o.idx != start {
					t.switchTo(servers, start, o.idx)
				}
				return cancelOnClose(o), nil, true
			}
		}
		if len(cancels) < limit {
			if err := launch(); err != nil {
				finish(-1)
				return nil, err, true
			}
			timer.Reset(t.HedgeAfter)
		} else if pending == 0 {
			if held != nil {
				drop(last503)
				return cancelOnClose(*held), nil, true
			}
			if last503 != nil {
				return cancelOnClose(*last503), nil, false
			}
			return nil, &Error{Attempts: *tried}, false
		}
	}
}

// cancelOnClose returns o's answer with a body that ends o's attempt
// context when closed.
func cancelOnClose(o outcome) *http.Response {
	body := o.resp.Body
	o.resp.Body = &prefixed{Reader: body, Closer: closerFunc(func() error {
		err := body.Close()
		o.cancel()
		return err
	})}
	return o.resp
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// switchTo makes servers[idx] sticky, unless the list was replaced meanwhile.
func (t *Transport) switchTo(servers []*url.URL, from, idx int) {
	t.mu.Lock()
	same := len(t.servers) == len(servers) && len(servers) > 0 && &t.servers[0] == &servers[0]
	if same {
		t.cur = idx
	}
	t.mu.Unlock()
	if same && t.OnSwitch != nil {
		t.OnSwitch(servers[from].String(), servers[idx].String())
	}
}

// peekCode reads the error code of a 503 answer and returns a body that
// gives the caller the same bytes.
func peekCode(resp *http.Response) (string, io.ReadCloser) {
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxPeek))
	replay := &prefixed{Reader: io.MultiReader(bytes.NewReader(head), resp.Body), Closer: resp.Body}
	if err != nil {
		return "", replay
	}
	d, ok := apierror.Parse(head)
	if !ok {
		return "", replay
	}
	return d.Code, replay
}

type prefixed struct {
	io.Reader
	io.Closer
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
