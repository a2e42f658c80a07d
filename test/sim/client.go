package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"
)

// runClient is -role client: the load generator alone. It loads the
// identities the server role wrote to stateDir, keeps one keep-alive mTLS
// connection per node as the single-process mode does, and brackets every
// measurement window with the server's own CPU snapshots, so the CPU figure
// is the server process's and nothing of the clients'.
//
// The first phase is every node's first heartbeat: against a fresh server
// that is the pending → ready write with its handshake. A second client run
// against the same server sends new VM ids (heartbeatBodies draws them), so
// its first phase is a handshake plus an observed-state write instead.
// It returns the rows it printed, for the sweep's plot.
func runClient(stateDir string, wait time.Duration, rates []float64, d time.Duration, modes []string, profile, overlay string) ([]clientRow, error) {
	return runClientUntil(stateDir, wait, rates, d, modes, profile, overlay, nil)
}

// clientRow is one measurement window of the client role.
type clientRow struct {
	phase
	mode     string
	srvCPU   float64 // % of one core, the server process over the window
	srvFDs   int
	cliFDs   int
	loadavg  string
	profFile string
}

// runClientUntil is runClient that gives up, with dead's error, when dead is
// closed: the sweep's server process has exited, and waiting for its state
// file or its answers would only time out.
func runClientUntil(stateDir string, wait time.Duration, rates []float64, d time.Duration, modes []string, profile, overlay string, dead func() error) ([]clientRow, error) {
	st, err := waitStateUntil(stateDir, wait, dead)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(st.CA)) {
		return nil, errors.New("state: no CA certificate")
	}
	n := len(st.Nodes)
	agents := make([]*agent, n)
	for i, c := range st.Nodes {
		kp, err := c.keyPair()
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", c.Name, err)
		}
		if agents[i], err = newAgent(kp, roots, heartbeatTemplate(i, overlay), overlay); err != nil {
			return nil, err
		}
	}
	st.Nodes = nil
	ctl := &controlClient{base: "http://" + st.Control, c: &http.Client{Timeout: 10 * time.Second}}
	realURL := "https://" + st.Addr + "/v1/heartbeat"

	type row = clientRow
	measure := func(name, mode string, rate float64, d time.Duration, count int, frac float64) (row, error) {
		runtime.GC()
		r := row{mode: mode, loadavg: loadavg()}
		if profile != "" {
			r.profFile = fmt.Sprintf("%s-server-%s-%.0f.pprof", profile, mode, rate)
			if err := ctl.post("/profile/start", url.Values{"file": {r.profFile}}); err != nil {
				return r, err
			}
		}
		s0, err := ctl.snapshot("start " + name)
		if err != nil {
			return r, err
		}
		r.phase = drive(name, realURL, agents, rate, d, count, frac)
		s1, err := ctl.snapshot(fmt.Sprintf("end %s @%.0f/s", name, rate))
		if err != nil {
			return r, err
		}
		if profile != "" {
			if err := ctl.post("/profile/stop", nil); err != nil {
				return r, err
			}
		}
		r.srvCPU = pct(s1.cpu()-s0.cpu(), time.Duration(s1.WallNanos-s0.WallNanos))
		r.srvFDs, r.cliFDs = s1.FDs, countFDs()
		fmt.Fprintf(os.Stderr, "client: %s @%.0f/s: %.0f/s ok, %d errors, p50 %s p99 %s max %s, server CPU %.1f %%, client CPU %.1f %%, fds server %d client %d, load %s\n",
			name, rate, r.achieved(), r.errors, round(r.p50), round(r.p99), round(r.max), r.srvCPU, r.cpuPct(), r.srvFDs, r.cliFDs, r.loadavg)
		return r, nil
	}

	var rows []row
	first, err := measure("first heartbeat (handshake + ready write)", "first", rates[0], 0, n, 0)
	if err != nil {
		return nil, err
	}
	rows = append(rows, first)
	for _, rate := range rates {
		for _, m := range modes {
			frac, name := 0.0, "steady, unchanged (no write)"
			switch m {
			case "unchanged":
			case "change":
				frac, name = 0.01, "steady, 1% change capacity (write)"
			case "noop":
				fmt.Fprintln(os.Stderr, "client: mode noop is single-process only (the server CPU here is measured directly); skipped")
				continue
			default:
				continue
			}
			r, err := measure(name, m, rate, d, 0, frac)
			if err != nil {
				return nil, err
			}
			rows = append(rows, r)
		}
	}

	fmt.Printf("Measured %s, split mode: server pid %d (%d CPUs), %d nodes enrolled in %.1f s (%.0f/s), %s per steady row.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), st.Pid, runtime.NumCPU(), n, st.EnrollSeconds, float64(n)/st.EnrollSeconds, d)
	fmt.Println("| phase | offered/s | achieved/s | ok | errors | p50 | p99 | max | server CPU (% of one core) | client CPU | fds server / client | load 1/5/15 before |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %d | %d | %s | %s | %s | %.1f %% | %.1f %% | %d / %d | %s |\n", r.name, r.rate, r.achieved(), r.ok, r.errors,
			round(r.p50), round(r.p99), round(r.max), r.srvCPU, r.cpuPct(), r.srvFDs, r.cliFDs, r.loadavg)
	}
	for _, r := range rows {
		if r.profFile != "" {
			fmt.Printf("\nserver profile: %s", r.profFile)
		}
	}
	fmt.Println()
	return rows, nil
}

// waitState waits for the server's state file, which it writes once every
// node is enrolled.
func waitState(dir string, wait time.Duration) (simState, error) {
	return waitStateUntil(dir, wait, nil)
}

// waitStateUntil is waitState that stops at once with dead's error once it
// returns one (the server process has exited).
func waitStateUntil(dir string, wait time.Duration, dead func() error) (simState, error) {
	deadline := time.Now().Add(wait)
	for {
		st, err := readState(dir)
		if err == nil {
			return st, nil
		}
		if dead != nil {
			if derr := dead(); derr != nil {
				return st, derr
			}
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return st, fmt.Errorf("wait for server state in %s: %w", dir, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// controlClient talks to the server role's control endpoint.
type controlClient struct {
	base string
	c    *http.Client
}

func (cc *controlClient) snapshot(label string) (snapshot, error) {
	var s snapshot
	resp, err := cc.c.Get(cc.base + "/snapshot?" + url.Values{"label": {label}}.Encode())
	if err != nil {
		return s, fmt.Errorf("server snapshot: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("server snapshot: %w", err)
	}
	return s, nil
}

func (cc *controlClient) post(path string, q url.Values) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, cc.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := cc.c.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server %s: status %d: %s", path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// loadavg is the host's 1/5/15-minute load, as uptime prints it.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
