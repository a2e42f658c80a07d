// Command watchfanout measures what GET /v1/watch streams cost one replica:
// a real otherix-api (single replica, plain HTTP on loopback so TLS is not
// counted), N streams of networks opened by this program, and a write load
// of -rate network updates per second through the API (PATCH of egress on
// -networks networks in turn, each write a `modified` event; creates would
// measure the create path's own growth, not the streams). For each N in
// -clients (0 first, the baseline) it reports:
//
//   - delivery latency p50/p99/max: from the moment a write is sent to the
//     moment each stream receives its event (so it includes the write's own
//     API latency, reported apart as "write");
//
//   - the replica's CPU (user+system, from /proc) per second of load, and
//     its RSS, and both per stream against the baseline;
//
//   - etcd's watcher gauges (etcd_debugging_mvcc_watcher_total and
//     watch_stream_total, read from the member's own /metrics on its client
//     listener): the same at every N, since one etcd watch per replica
//     fans out to all streams.
//
//     make build && go run ./test/bench/watchfanout -bin bin -clients 0,100,1000 -rate 100 -d 20s
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	adminEmail    = "admin@bench.test"
	adminPassword = "bench-admin-password-1"
)

type result struct {
	clients               int
	writes                int
	p50, p99, max, writeP time.Duration
	delivered, expected   int
	cpuPerSec             float64 // CPU seconds per second of load
	rssBytes              int64
	watchers, streams     string
}

func main() {
	bin := flag.String("bin", "bin", "directory holding otherix-api (make build)")
	clientsFlag := flag.String("clients", "0,100,1000", "stream counts to measure, comma-separated; 0 is the baseline")
	rate := flag.Int("rate", 100, "network updates per second (at most 32 in flight: a replica that cannot keep up gets fewer, reported)")
	nets := flag.Int("networks", 50, "networks the updates go round")
	dur := flag.Duration("d", 20*time.Second, "load duration per stream count")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			fail(fmt.Errorf("-clients: %q", f))
		}
		counts = append(counts, n)
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	var results []result
	for i, n := range counts {
		// A fresh replica per count: RSS and CPU start from the same place.
		_ = i
		r, err := measure(binDir, n, *rate, *nets, *dur)
		if err != nil {
			fail(fmt.Errorf("%d streams: %w", n, err))
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%d streams: %d writes, delivered %d/%d, latency p50 %s p99 %s max %s, write p50 %s, CPU %.3f s/s, RSS %.1f MiB, etcd watchers %s streams %s (load %s)\n",
			n, r.writes, r.delivered, r.expected, r.p50, r.p99, r.max, r.writeP, r.cpuPerSec, float64(r.rssBytes)/(1<<20), r.watchers, r.streams, loadavg())
	}
	var base *result
	for i := range results {
		if results[i].clients == 0 {
			base = &results[i]
		}
	}
	fmt.Println("| streams | writes/s (achieved) | latency p50 / p99 / max | write p50 | replica CPU | CPU per stream | RSS | RSS per stream | etcd watchers / watch streams |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		perCPU, perRSS := "-", "-"
		if base != nil && r.clients > 0 {
			perCPU = fmt.Sprintf("%.2f ms/s", 1000*(r.cpuPerSec-base.cpuPerSec)/float64(r.clients))
			perRSS = fmt.Sprintf("%.1f KiB", float64(r.rssBytes-base.rssBytes)/1024/float64(r.clients))
		}
		lat := "-"
		if r.clients > 0 {
			lat = fmt.Sprintf("%s / %s / %s", r.p50.Round(100*time.Microsecond), r.p99.Round(100*time.Microsecond), r.max.Round(time.Millisecond))
		}
		fmt.Printf("| %d | %d (%.0f) | %s | %s | %.0f %% of a core | %s | %.1f MiB | %s | %s / %s |\n",
			r.clients, *rate, float64(r.writes)/dur.Seconds(), lat, r.writeP.Round(100*time.Microsecond), 100*r.cpuPerSec, perCPU, float64(r.rssBytes)/(1<<20), perRSS, r.watchers, r.streams)
	}
}

// measure runs one replica with n streams under the write load.
func measure(binDir string, n, rate, nets int, dur time.Duration) (result, error) {
	res := result{clients: n}
	dir, err := os.MkdirTemp("", "otherix-watchfanout-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	rest, agent, etcdURL := freePort(), freePort(), "http://"+freePort()
	cmd := exec.Command(filepath.Join(binDir, "otherix-api"), "--data-dir", dir, "--listen", rest, "--agent-listen", agent)
	cmd.Env = append(os.Environ(), "OTHERIX_ADMIN__EMAIL="+adminEmail, "OTHERIX_ADMIN__PASSWORD="+adminPassword,
		"OTHERIX_TLS__ENABLED=false", "OTHERIX_LOG__LEVEL=warn", "OTHERIX_ETCD__CLIENT_URL="+etcdURL,
		"OTHERIX_WATCH__MAX_CLIENTS=4096", "OTHERIX_WATCH__PER_USER=4096", "OTHERIX_WATCH__BUFFER=4096",
		// The dashboard's and the CLI's rate limit would count the bench's
		// logins only; keep the defaults otherwise.
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return res, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	api := "http://" + rest
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	if err := wait(60*time.Second, func() bool {
		resp, err := hc.Get(api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return res, fmt.Errorf("replica not ready: %w\n%s", err, out.String())
	}
	token, err := login(hc, api)
	if err != nil {
		return res, err
	}
	do := func(method, path string, body any) (int64, int, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, api+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		var v struct{ Revision int64 }
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return v.Revision, resp.StatusCode, nil
	}
	for j := range nets {
		if _, code, err := do(http.MethodPost, "/v1/networks", map[string]string{"name": fmt.Sprintf("f-%d", j), "cidr": fmt.Sprintf("10.99.%d.0/24", j)}); err != nil || code != http.StatusCreated {
			return res, fmt.Errorf("create network f-%d: %d %v", j, code, err)
		}
	}

	// The streams: each its own connection, as browsers and CLIs are.
	type got struct {
		rev int64
		at  time.Time
	}
	var (
		lmu       sync.Mutex
		gots      [][]got // each stream's modified events
		delivered atomic.Int64
		smu       sync.Mutex
		sent      = map[int64]time.Time{} // revision of a write → when it was sent
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var opened sync.WaitGroup
	var streamsDone sync.WaitGroup
	openErr := make(chan error, n)
	for range n {
		opened.Add(1)
		streamsDone.Add(1)
		go func() {
			defer streamsDone.Done()
			tr := &http.Transport{DisableKeepAlives: true}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/watch?types=networks", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					err = fmt.Errorf("watch: %d %s", resp.StatusCode, b)
				}
				openErr <- err
				opened.Done()
				return
			}
			defer resp.Body.Close()
			opened.Done()
			mine := make([]got, 0, 4096)
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			var rev int64
			for sc.Scan() {
				line := sc.Bytes()
				switch {
				case bytes.HasPrefix(line, []byte("id: ")):
					rev, _ = strconv.ParseInt(string(line[4:]), 10, 64)
				case bytes.Equal(line, []byte("event: modified")):
					mine = append(mine, got{rev, time.Now()})
					delivered.Add(1)
				}
			}
			lmu.Lock()
			gots = append(gots, mine)
			lmu.Unlock()
		}()
	}
	opened.Wait()
	select {
	case err := <-openErr:
		return res, err
	default:
	}

	cpu0, err := procCPU(cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	var writeLats []time.Duration
	var wmu sync.Mutex
	var writers sync.WaitGroup
	inflight := make(chan struct{}, 32)
	egress := make([]bool, nets)
	for i := 0; time.Since(start) < dur; i++ {
		<-tick.C
		select {
		case inflight <- struct{}{}:
		default:
			continue // 32 writes in flight: the replica is behind
		}
		j := i % nets
		egress[j] = !egress[j]
		val := egress[j]
		writers.Add(1)
		go func() {
			defer writers.Done()
			defer func() { <-inflight }()
			t0 := time.Now()
			rev, code, err := do(http.MethodPatch, fmt.Sprintf("/v1/networks/f-%d", j), map[string]bool{"egress": val})
			if err != nil || code != http.StatusOK {
				return
			}
			wmu.Lock()
			writeLats = append(writeLats, time.Since(t0))
			wmu.Unlock()
			smu.Lock()
			if _, dup := sent[rev]; !dup {
				sent[rev] = t0
			}
			smu.Unlock()
		}()
	}
	tick.Stop()
	writers.Wait()
	elapsed := time.Since(start)
	res.writes = len(sent)
	res.expected = n * res.writes
	// Let the last events arrive, then read the replica's figures.
	_ = wait(30*time.Second, func() bool { return delivered.Load() >= int64(res.expected) })
	cpu1, err := procCPU(cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	res.cpuPerSec = (cpu1 - cpu0) / elapsed.Seconds()
	res.rssBytes, _ = procRSS(cmd.Process.Pid)
	res.watchers, res.streams = etcdGauge(etcdURL, "etcd_debugging_mvcc_watcher_total"), etcdGauge(etcdURL, "etcd_debugging_mvcc_watch_stream_total")
	cancel()
	streamsDone.Wait()
	res.delivered = int(delivered.Load())
	var lats []time.Duration
	for _, mine := range gots {
		for _, g := range mine {
			if t0, ok := sent[g.rev]; ok {
				lats = append(lats, g.at.Sub(t0))
			}
		}
	}
	slices.Sort(lats)
	if len(lats) > 0 {
		res.p50, res.p99, res.max = lats[len(lats)/2], lats[len(lats)*99/100], lats[len(lats)-1]
	}
	slices.Sort(writeLats)
	if len(writeLats) > 0 {
		res.writeP = writeLats[len(writeLats)/2]
	}
	return res, nil
}

func login(hc *http.Client, api string) (string, error) {
	b, _ := json.Marshal(map[string]string{"email": adminEmail, "password": adminPassword})
	resp, err := hc.Post(api+"/v1/auth/login", "application/json", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pair); err != nil || pair.AccessToken == "" {
		return "", fmt.Errorf("login: %d %v", resp.StatusCode, err)
	}
	return pair.AccessToken, nil
}

// procCPU is the process's user+system CPU seconds (/proc/PID/stat).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	const hz = 100 // USER_HZ on Linux
	return (ut + st) / hz, nil
}

// procRSS is the process's resident set (VmRSS).
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS")
}

// etcdGauge reads one unlabelled gauge from the member's /metrics.
func etcdGauge(base, name string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return v
		}
	}
	return "?"
}

func wait(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "watchfanout bench:", err)
	os.Exit(1)
}
