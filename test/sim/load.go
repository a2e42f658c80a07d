package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/otherix/otherix/messages"
)

// agent is one simulated node: its own TLS client (its certificate, the
// cluster CA as the only root, keep-alive like the real agent's transport)
// and its two encoded heartbeats.
type agent struct {
	client *http.Client
	cur    atomic.Int32 // which body the control plane last saw
	// trackRevision makes the agent read each answer's overlay revision and
	// name it in its next heartbeats, as the real agent does.
	trackRevision bool

	mu       sync.Mutex
	hb       messages.Heartbeat // the template, for re-encoding
	bodies   [2][]byte
	revision string
}

func newAgent(cert tls.Certificate, roots *x509.CertPool, hb messages.Heartbeat, overlay string) (*agent, error) {
	bodies, err := heartbeatBodies(hb)
	if err != nil {
		return nil, err
	}
	return &agent{hb: hb, bodies: bodies, trackRevision: overlay == overlayRevision, client: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     2 * time.Minute,
			ForceAttemptHTTP2:   false,
		},
	}}, nil
}

// body is the encoded heartbeat i as the agent would send it now.
func (a *agent) body(i int32) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bodies[i]
}

// answered takes an answer's overlay revision: a new one is named in the
// agent's next heartbeats.
func (a *agent) answered(resp []byte) {
	if !a.trackRevision {
		return
	}
	var r struct {
		Desired struct {
			OverlayRevision string `json:"overlay_revision"`
		} `json:"desired"`
	}
	if json.Unmarshal(resp, &r) != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Desired.OverlayRevision == a.revision {
		return
	}
	hb := a.hb
	hb.OverlayRevision = r.Desired.OverlayRevision
	if b, err := heartbeatBodies(hb); err == nil {
		a.bodies, a.revision = b, r.Desired.OverlayRevision
	}
}

// phase is one measurement window.
type phase struct {
	name     string
	rate     float64
	sent     int
	ok       int
	errors   int64
	elapsed  time.Duration
	p50, p99 time.Duration
	max      time.Duration
	cpu      time.Duration // process user+sys during the window
}

func (p phase) achieved() float64 { return float64(p.ok) / p.elapsed.Seconds() }
func (p phase) cpuPct() float64   { return 100 * p.cpu.Seconds() / p.elapsed.Seconds() }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// drive sends heartbeats open-loop at rate per second: request k is due at
// start + k/rate whatever earlier requests are doing, each in its own
// goroutine, so a slow server shows as latency, not as a lower offered rate.
// Nodes take turns round-robin from a random offset; with count > 0 exactly
// count heartbeats are sent (one per node for the warm-up), else until d.
// changeFrac of heartbeats flip the node's capacity (a write).
func drive(name, url string, agents []*agent, rate float64, d time.Duration, count int, changeFrac float64) phase {
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	interval := time.Duration(float64(time.Second) / rate)
	cpu0 := cpuTime()
	start := time.Now()
	off := 0
	if count == 0 {
		off = rand.IntN(len(agents))
	}
	sent := 0
	for k := 0; ; k++ {
		if count > 0 && k >= count {
			break
		}
		due := start.Add(time.Duration(k) * interval)
		if count == 0 && due.Sub(start) >= d {
			break
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		a := agents[(off+k)%len(agents)]
		body := a.body(a.cur.Load())
		if changeFrac > 0 && rand.Float64() < changeFrac {
			nv := 1 - a.cur.Load()
			a.cur.Store(nv)
			body = a.body(nv)
		}
		sent++
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := post(a.client, url, body)
			lat := time.Since(t0)
			if err == nil {
				a.answered(resp)
			}
			if err != nil {
				if errs.Add(1) <= 3 {
					fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
				}
				return
			}
			mu.Lock()
			lats = append(lats, lat)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	p := phase{name: name, rate: rate, sent: sent, ok: len(lats), errors: errs.Load(), elapsed: elapsed, cpu: cpuTime() - cpu0}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if n := len(lats); n > 0 {
		p.p50, p.p99, p.max = lats[n/2], lats[n*99/100], lats[n-1]
	}
	return p
}

// post sends one heartbeat and returns the answer's body.
func post(c *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
	}
	return b, nil
}
