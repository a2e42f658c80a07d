// Command sim is a fleet simulator for heartbeat handling (issue #4): it
// runs the control plane in-process (embedded etcd, the gateway, the
// agent-facing API on a real TLS listener configured as otherix-api
// configures it), enrolls N nodes through join tokens and CSRs, and drives
// heartbeats from N simulated agents, each with its own client certificate,
// at an aggregate open-loop rate. It prints latency percentiles, achieved
// rate, errors and process CPU as a Markdown table.
//
// With -role server and -role client the control plane and the load
// generator run as two processes, each under its own descriptor limit, and
// the CPU reported is the server process's own (see server.go, client.go).
// The default, -role single, is the one-process mode below.
//
// In the single mode the load generator shares the process, so process CPU includes the
// clients. Two ways to separate them: a no-op server (same TLS listener and
// client certificates, a handler that drains the body and answers a canned
// 200) measured at the same rate, and pprof labels (side=server for etcd,
// the gateway and the listener; side=client for the agents) in the
// -cpuprofile files, read with `go tool pprof -tags`.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/test/bench/benchplot"
)

func main() {
	nodes := flag.Int("nodes", 2000, "simulated nodes (each enrolled, each with its own certificate)")
	rates := flag.String("rate", "333", "aggregate heartbeats per second; a comma list runs each")
	dur := flag.Duration("d", 20*time.Second, "duration of each steady-state measurement")
	modes := flag.String("modes", "unchanged,change,noop", "steady-state variants: unchanged (no write), change (1% of heartbeats change capacity: a write), noop (no-op server, for the client's cost)")
	workers := flag.Int("enroll-workers", 8, "parallel enrollments")
	profile := flag.String("cpuprofile", "", "write one CPU profile per steady-state measurement to PREFIX-<mode>-<rate>.pprof (split mode: the server's, to PREFIX-server-<mode>-<rate>.pprof, written by the server process)")
	role := flag.String("role", "single", "single (control plane and load generator in one process), server (control plane: enroll -nodes, write -state, serve until killed), client (load generator against the server in -state) or sweep (a server process per count of -sweep-nodes, each driven at count/-interval: CPU against fleet size)")
	stateDir := flag.String("state", "", "split mode: directory for the server's state file (listener, control endpoint, CA, node certificates and keys)")
	wait := flag.Duration("wait", 5*time.Minute, "client: how long to wait for the server's state file")
	overlay := flag.String("overlay", overlayOff, "agents' data plane: off (no WireGuard key), whole (a key and endpoint; every answer carries the whole overlay) or revision (agents name the overlay revision they hold, as the real agent does)")
	flag.IntVar(&simVMs, "vms", 20, "VMs each simulated node reports")
	sweepNodes := flag.String("sweep-nodes", "1000,2500,5000,10000", "sweep: node counts, one server process each")
	interval := flag.Duration("interval", 30*time.Second, "sweep: each node's heartbeat interval (the rate is nodes/interval)")
	plotPath := flag.String("plot", "", "sweep: write server CPU against nodes to this SVG file")
	flag.IntVar(&simImages, "images", 5, "cached images each simulated node reports; beyond five they have 128-byte names (the longest allowed)")
	flag.Parse()
	switch *overlay {
	case overlayOff, overlayWhole, overlayRevision:
	default:
		fmt.Fprintln(os.Stderr, "sim: -overlay must be off, whole or revision")
		os.Exit(2)
	}
	var rs []float64
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 {
			fmt.Fprintln(os.Stderr, "sim: bad -rate", s)
			os.Exit(2)
		}
		rs = append(rs, r)
	}
	// No QEMU here: the agents are simulated, so no accelerator is used.
	fmt.Fprintln(os.Stderr, "sim: accelerator: none (simulated agents, no QEMU)")
	var err error
	switch *role {
	case "single":
		err = run(*nodes, rs, *dur, strings.Split(*modes, ","), *workers, *profile, *overlay)
	case "sweep":
		var counts []int
		for _, f := range strings.Split(*sweepNodes, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c < 1 {
				fmt.Fprintln(os.Stderr, "sim: bad -sweep-nodes", f)
				os.Exit(2)
			}
			counts = append(counts, c)
		}
		if *plotPath != "" && !benchplot.Enabled() {
			fmt.Fprintln(os.Stderr, "sim: -plot needs a build with -tags plot (go run -tags plot ./test/sim …)")
			os.Exit(2)
		}
		if *interval <= 0 {
			fmt.Fprintln(os.Stderr, "sim: -interval must be positive")
			os.Exit(2)
		}
		err = runSweep(counts, *interval, *dur, strings.Split(*modes, ","), *workers, *plotPath)
	case "server", "client":
		if *stateDir == "" {
			fmt.Fprintln(os.Stderr, "sim: -role", *role, "needs -state DIR")
			os.Exit(2)
		}
		if *role == "server" {
			err = runServer(*nodes, *workers, *stateDir)
		} else {
			_, err = runClient(*stateDir, *wait, rs, *dur, strings.Split(*modes, ","), *profile, *overlay)
		}
	default:
		fmt.Fprintln(os.Stderr, "sim: bad -role", *role)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
}

func run(n int, rates []float64, d time.Duration, modes []string, workers int, profile, overlay string) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	dir, err := os.MkdirTemp("", "otherix-sim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Everything the control plane starts inherits side=server, so CPU
	// profile samples can be split from the agents' (side=client).
	var (
		member *etcd.Member
		g      *gateway.Gateway
		agentL net.Listener
		noopL  net.Listener
	)
	srvErr := func() error {
		var err error
		pprof.Do(ctx, pprof.Labels("side", "server"), func(ctx context.Context) {
			err = func() error {
				if member, err = etcd.Start(ctx, etcd.Config{DataDir: dir}); err != nil {
					return err
				}
				st := store.New(member.Client(), store.WithMaxTxnOps(member.MaxTxnOps()))
				if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
					return err
				}
				if g, err = gateway.Start(ctx, st, gateway.Config{Replica: "sim"}, log); err != nil {
					return err
				}
				if err := g.Ready(ctx); err != nil {
					return err
				}
				if agentL, err = serveTLS(g, server.NewAgentAPI(g, log), log); err != nil {
					return err
				}
				canned, _ := json.Marshal(messages.HeartbeatResponse{IntervalSeconds: 30,
					Desired: messages.DesiredState{Settings: messages.DefaultSettings()}})
				noopL, err = serveTLS(g, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "application/json; charset=utf-8")
					_, _ = w.Write(canned)
				}), log)
				return err
			}()
		})
		return err
	}()
	if member != nil {
		defer member.Close()
	}
	if g != nil {
		defer g.Close()
	}
	if srvErr != nil {
		return srvErr
	}

	t0 := time.Now()
	certs, err := enrollAll(ctx, g, n, workers)
	if err != nil {
		return err
	}
	enrollTime := time.Since(t0)
	fmt.Fprintf(os.Stderr, "enrolled %d nodes in %s (%.0f/s, %d workers)\n", n, elapsedSince(t0), float64(n)/enrollTime.Seconds(), workers)

	agents := make([]*agent, n)
	for i := range agents {
		kp, err := certs[i].keyPair()
		if err != nil {
			return err
		}
		if agents[i], err = newAgent(kp, g.CA().Pool(), heartbeatTemplate(i, overlay), overlay); err != nil {
			return err
		}
	}
	realURL := "https://" + agentL.Addr().String() + "/v1/heartbeat"
	noopURL := "https://" + noopL.Addr().String() + "/v1/heartbeat"

	var phases []phase
	pprof.Do(ctx, pprof.Labels("side", "client"), func(context.Context) {
		// Warm-up: every node's first heartbeat, with its TLS handshake, at
		// the first rate; this is the pending → ready write.
		first := drive("first heartbeat (handshake + ready write)", realURL, agents, rates[0], 0, n, 0)
		phases = append(phases, first)
		fmt.Fprintf(os.Stderr, "%s: %d ok, %d errors, p50 %s p99 %s\n", first.name, first.ok, first.errors, first.p50, first.p99)
		if contains(modes, "noop") {
			drive("noop warm-up", noopURL, agents, rates[0], 0, n, 0) // handshakes, not reported
		}
		for _, r := range rates {
			for _, m := range modes {
				url, frac, name := realURL, 0.0, "steady, unchanged (no write)"
				switch m {
				case "unchanged":
				case "change":
					frac, name = 0.01, "steady, 1% change capacity (write)"
				case "noop":
					url, name = noopURL, "no-op server (client + TLS + net/http)"
				default:
					continue
				}
				runtime.GC()
				stop := func() {}
				if profile != "" {
					f, err := os.Create(fmt.Sprintf("%s-%s-%.0f.pprof", profile, m, r))
					if err == nil && pprof.StartCPUProfile(f) == nil {
						stop = func() { pprof.StopCPUProfile(); f.Close() }
					}
				}
				p := drive(name, url, agents, r, d, 0, frac)
				stop()
				phases = append(phases, p)
				fmt.Fprintf(os.Stderr, "%s @%.0f/s: %.0f/s ok, %d errors, p50 %s p99 %s, cpu %.1f%%\n",
					name, r, p.achieved(), p.errors, p.p50, p.p99, p.cpuPct())
			}
		}
	})

	ready, vms, images, err := fleetHealth(ctx, g)
	if err != nil {
		return err
	}
	fmt.Printf("Measured %s on %d CPUs (GOMAXPROCS %d), %d nodes enrolled in %s, %s per steady row.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOMAXPROCS(0), n, enrollTime.Round(100*time.Millisecond), d)
	fmt.Printf("Each node reports %d VMs and %d images in a %d-byte heartbeat; after the run %d of %d nodes are ready, counting %d VMs and %d images.\n\n",
		simVMs, simImages, len(agents[0].body(0)), ready, n, vms, images)
	fmt.Println("| phase | offered/s | achieved/s | ok | errors | p50 | p99 | max | process CPU (% of one core) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, p := range phases {
		fmt.Printf("| %s | %.0f | %.0f | %d | %d | %s | %s | %s | %.1f %% |\n", p.name, p.rate, p.achieved(), p.ok, p.errors,
			round(p.p50), round(p.p99), round(p.max), p.cpuPct())
	}
	// Server-side estimate: the real run minus the no-op run at the same
	// rate. The no-op run still pays the server's TLS record and net/http
	// work, so this is a lower bound of the server's share.
	noop := map[float64]phase{}
	for _, p := range phases {
		if strings.HasPrefix(p.name, "no-op") {
			noop[p.rate] = p
		}
	}
	for _, p := range phases[1:] {
		if b, ok := noop[p.rate]; ok && !strings.HasPrefix(p.name, "no-op") {
			fmt.Printf("\n%s @%.0f/s: process %.1f %% − no-op %.1f %% = %.1f %% of one core for the handler, gateway and etcd "+
				"(%.1f %% per 1,000 heartbeats/s).", p.name, p.rate, p.cpuPct(), b.cpuPct(), p.cpuPct()-b.cpuPct(),
				(p.cpuPct()-b.cpuPct())*1000/p.achieved())
		}
	}
	fmt.Println()
	return nil
}

// serveTLS serves h on 127.0.0.1:0 with the agent listener's TLS settings
// from cmd/otherix-api/serve.go: a server certificate from the cluster CA,
// client certificates verified against it when given.
func serveTLS(g *gateway.Gateway, h http.Handler, log *slog.Logger) (net.Listener, error) {
	cert, err := g.CA().IssueServerCert([]string{"127.0.0.1", "localhost"}, time.Now(), 0)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    g.CA().Pool(),
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return ln, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func round(d time.Duration) string {
	if d >= 10*time.Millisecond {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}

// fleetHealth counts the ready nodes and the VMs and images they report.
func fleetHealth(ctx context.Context, g *gateway.Gateway) (ready, vms, images int, err error) {
	page := store.Page{Limit: 200}
	for {
		nodes, next, err := g.ListNodes(ctx, page)
		if err != nil {
			return 0, 0, 0, err
		}
		for _, n := range nodes {
			if n.Phase == messages.NodeReady {
				ready++
			}
			vms += n.Status.VMCount
			images += n.Status.ImageCount
		}
		if next == "" {
			return ready, vms, images, nil
		}
		page.Cursor = next
	}
}
