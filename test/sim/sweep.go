package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/otherix/otherix/test/bench/benchplot"
)

// runSweep is -role sweep: heartbeat CPU against fleet size. For each node
// count it starts this same binary as -role server in a process of its own
// (so its CPU is the control plane's alone, and each process stays under its
// descriptor limit), drives it as -role client at count/interval heartbeats
// per second (every node beating once per interval, as real agents do), and
// stops it. The server's CPU per mode and count is printed, and drawn to
// plotPath when set.
func runSweep(counts []int, interval, d time.Duration, modes []string, workers int, plotPath string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	type point struct {
		nodes int
		rate  float64
		rows  []clientRow
	}
	var points []point
	for _, n := range counts {
		rate := float64(n) / interval.Seconds()
		rows, err := sweepOne(self, n, rate, d, modes, workers)
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		points = append(points, point{nodes: n, rate: rate, rows: rows})
	}

	fmt.Printf("\nHeartbeat CPU against fleet size: each node beats every %s; server CPU in %% of one core (the control-plane process alone).\n\n", interval)
	fmt.Print("| nodes | heartbeats/s |")
	for _, m := range modes {
		fmt.Printf(" %s: CPU · p99 · errors |", m)
	}
	fmt.Print("\n|---:|---:|")
	for range modes {
		fmt.Print("---:|")
	}
	fmt.Println()
	for _, p := range points {
		fmt.Printf("| %d | %.0f |", p.nodes, p.rate)
		for _, m := range modes {
			cell := "—"
			for _, r := range p.rows {
				if r.mode == m {
					cell = fmt.Sprintf("%.1f %% · %s · %d", r.srvCPU, round(r.p99), r.errors)
				}
			}
			fmt.Printf(" %s |", cell)
		}
		fmt.Println()
	}
	// A window with errors measured a fleet partly reconnecting (its
	// heartbeats timed out on a starved host), not a steady one, and so
	// does every window after it at that count, which still carries the
	// reconnects: their CPU is not the figure, and the plot leaves them
	// out, saying so.
	settled := map[int]bool{}
	for _, p := range points {
		settled[p.nodes] = true
		for _, r := range p.rows {
			if r.errors > 0 {
				settled[p.nodes] = false
				fmt.Printf("\n%d nodes, %s: %d of %d heartbeats failed (the client's 10 s timeout).", p.nodes, r.name, r.errors, int64(r.ok)+r.errors)
			}
		}
		if !settled[p.nodes] {
			fmt.Printf("\n%d nodes: the fleet did not settle on this host; left out of the plot.", p.nodes)
		}
	}
	fmt.Println()
	if plotPath == "" {
		return nil
	}
	chart := benchplot.Chart{
		Title:  fmt.Sprintf("Heartbeat CPU vs nodes (a beat per node every %s)", interval),
		XLabel: "nodes", YLabel: "server CPU, % of one core",
		Target: 30, TargetLabel: "target at 10,000 nodes: < 30 %",
	}
	for _, p := range points {
		chart.XTicks = append(chart.XTicks, float64(p.nodes))
	}
	for _, m := range modes {
		s := benchplot.Series{Name: modeName(m)}
		for _, p := range points {
			for _, r := range p.rows {
				if r.mode == m && settled[p.nodes] {
					s.Points = append(s.Points, benchplot.Point{X: float64(p.nodes), Y: r.srvCPU, Lo: r.srvCPU, Hi: r.srvCPU})
				}
			}
		}
		chart.Series = append(chart.Series, s)
	}
	if err := benchplot.Write(plotPath, chart); err != nil {
		return err
	}
	fmt.Println("plot:", plotPath)
	return nil
}

func modeName(m string) string {
	switch m {
	case "unchanged":
		return "steady, unchanged (no write)"
	case "change":
		return "steady, 1 % change capacity (write)"
	}
	return m
}

// sweepOne runs one server process for n nodes and one client run against
// it. A server that exits early fails the sweep at once with the end of its
// log, which is kept.
func sweepOne(self string, n int, rate float64, d time.Duration, modes []string, workers int) ([]clientRow, error) {
	dir, err := os.MkdirTemp("", "otherix-sweep-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self, "-role", "server", "-nodes", strconv.Itoa(n), "-state", dir, "-enroll-workers", strconv.Itoa(workers))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	dead := func() error {
		select {
		case <-done:
			return fmt.Errorf("sim server (pid %d) exited (%v); last lines of %s:\n%s", cmd.Process.Pid, waitErr, logPath, tail(logPath, 30))
		default:
			return nil
		}
	}
	fmt.Fprintf(os.Stderr, "sweep: %d nodes, %.0f heartbeats/s, server pid %d, log %s\n", n, rate, cmd.Process.Pid, logPath)
	rows, err := runClientUntil(dir, 10*time.Minute, []float64{rate}, d, modes, "", overlayOff, dead)
	if derr := dead(); err != nil && derr != nil {
		err = errors.Join(err, derr)
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if err != nil {
		return nil, err // the dir stays: its log is named above
	}
	os.RemoveAll(dir)
	return rows, nil
}

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}
