package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// stateFile is what the server role leaves in -state for the client role:
// where to send heartbeats, where to ask for the server's CPU, the cluster
// CA and every node's certificate and key. It is written last, by rename, so
// its presence means the server is ready.
const stateFile = "sim-state.json"

type simState struct {
	// Addr is the agent listener (host:port).
	Addr string `json:"addr"`
	// Control is the plain-HTTP control endpoint on loopback (host:port).
	Control string `json:"control"`
	// CA is the cluster CA certificate in PEM.
	CA string `json:"ca"`
	// Pid is the server process, the one whose CPU is reported.
	Pid int `json:"pid"`
	// EnrollSeconds is the wall time of enrolling all nodes.
	EnrollSeconds float64 `json:"enroll_seconds"`
	// Nodes are the enrolled identities, in order.
	Nodes []nodeCred `json:"nodes"`
}

// snapshot is the server's answer on GET /snapshot: its own resource usage,
// read with getrusage(RUSAGE_SELF) in the server process, so it holds
// etcd, the gateway and the listener and nothing of the load generator.
type snapshot struct {
	WallNanos  int64  `json:"wall_ns"`
	UserNanos  int64  `json:"user_ns"`
	SysNanos   int64  `json:"sys_ns"`
	FDs        int    `json:"fds"`
	Goroutines int    `json:"goroutines"`
	HeapBytes  uint64 `json:"heap_bytes"`
}

func (s snapshot) cpu() time.Duration { return time.Duration(s.UserNanos + s.SysNanos) }

func takeSnapshot() snapshot {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return snapshot{WallNanos: time.Now().UnixNano(), UserNanos: ru.Utime.Nano(), SysNanos: ru.Stime.Nano(),
		FDs: countFDs(), Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc}
}

// countFDs counts the process's open descriptors (Linux).
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// runServer is -role server: the control plane as in the single-process
// mode (embedded etcd, the gateway, the agent listener), n enrolled nodes
// written to stateDir, then it serves until SIGINT/SIGTERM. The control
// endpoint answers GET /snapshot (CPU, descriptors; each call also prints
// the CPU since the previous one to stderr), POST /profile/start?file=F,
// POST /profile/stop and /debug/pprof/. SIGUSR1 prints the same line as
// /snapshot.
func runServer(n, workers int, stateDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(stateDir, stateFile)) // a stale file would tell the client we are ready
	dir, err := os.MkdirTemp("", "otherix-sim-server-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	member, err := etcd.Start(ctx, etcd.Config{DataDir: dir})
	if err != nil {
		return err
	}
	defer member.Close()
	st := store.New(member.Client(), store.WithMaxTxnOps(member.MaxTxnOps()))
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		return err
	}
	g, err := gateway.Start(ctx, st, gateway.Config{Replica: "sim"}, log)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.Ready(ctx); err != nil {
		return err
	}
	agentL, err := serveTLS(g, server.NewAgentAPI(g, log), log)
	if err != nil {
		return err
	}
	defer agentL.Close()

	t0 := time.Now()
	creds, err := enrollAll(ctx, g, n, workers)
	if err != nil {
		return err
	}
	enroll := time.Since(t0)
	fmt.Fprintf(os.Stderr, "server: enrolled %d nodes in %s (%.0f/s, %d workers)\n", n, elapsedSince(t0), float64(n)/enroll.Seconds(), workers)

	ctl := newControl()
	ctlL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctlSrv := &http.Server{Handler: ctl.mux(), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ctlSrv.Serve(ctlL) }()
	defer func() { _ = ctlSrv.Close(); wg.Wait() }()

	if err := writeState(stateDir, simState{Addr: agentL.Addr().String(), Control: ctlL.Addr().String(),
		CA: string(g.CA().CertPEM()), Pid: os.Getpid(), EnrollSeconds: enroll.Seconds(), Nodes: creds}); err != nil {
		return err
	}
	creds = nil
	runtime.GC()
	fmt.Fprintf(os.Stderr, "server: pid %d, agent listener %s, control %s, state %s, %d fds; serving until SIGINT/SIGTERM\n",
		os.Getpid(), agentL.Addr(), ctlL.Addr(), filepath.Join(stateDir, stateFile), countFDs())

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case <-ctx.Done():
			ctl.stopProfile()
			fmt.Fprintln(os.Stderr, "server: stopping")
			return nil
		case <-usr1:
			ctl.mark("SIGUSR1")
		}
	}
}

// control is the server's measurement endpoint.
type control struct {
	mu      sync.Mutex
	last    snapshot // the previous mark, for the delta printed to stderr
	profile *os.File // the CPU profile being written, if any
}

func newControl() *control { return &control{last: takeSnapshot()} }

func (c *control) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /snapshot", func(w http.ResponseWriter, r *http.Request) {
		s := c.mark(r.URL.Query().Get("label"))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
	m.HandleFunc("POST /profile/start", func(w http.ResponseWriter, r *http.Request) {
		if err := c.startProfile(r.URL.Query().Get("file")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	m.HandleFunc("POST /profile/stop", func(w http.ResponseWriter, r *http.Request) { c.stopProfile() })
	// The usual pprof endpoints, for the heap and goroutines of a running
	// server: go tool pprof http://CONTROL/debug/pprof/heap
	m.HandleFunc("/debug/pprof/", httppprof.Index)
	m.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	return m
}

// mark takes a snapshot and prints the server's CPU since the previous one.
func (c *control) mark(label string) snapshot {
	s := takeSnapshot()
	c.mu.Lock()
	prev := c.last
	c.last = s
	c.mu.Unlock()
	wall := time.Duration(s.WallNanos - prev.WallNanos)
	fmt.Fprintf(os.Stderr, "server: %s: %.1f %% of one core over %s (user %.1f %%, sys %.1f %%), %d fds, %d goroutines, heap %d MiB\n",
		label, pct(s.cpu()-prev.cpu(), wall), wall.Round(time.Millisecond),
		pct(time.Duration(s.UserNanos-prev.UserNanos), wall), pct(time.Duration(s.SysNanos-prev.SysNanos), wall),
		s.FDs, s.Goroutines, s.HeapBytes>>20)
	return s
}

func (c *control) startProfile(file string) error {
	if file == "" {
		return fmt.Errorf("profile: no file")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.profile != nil {
		return fmt.Errorf("profile: already writing %s", c.profile.Name())
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	c.profile = f
	return nil
}

func (c *control) stopProfile() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.profile == nil {
		return
	}
	pprof.StopCPUProfile()
	c.profile.Close()
	c.profile = nil
}

func pct(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * cpu.Seconds() / wall.Seconds()
}

// writeState writes the state file by rename, so a reader never sees half.
func writeState(dir string, s simState) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

func readState(dir string) (simState, error) {
	var s simState
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("read %s: %w", stateFile, err)
	}
	return s, nil
}
