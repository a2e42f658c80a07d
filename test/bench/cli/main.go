// Command cli times whole otherix CLI processes against a real local
// otherix-api over TLS: `otherix vm list` and `otherix version` (client and
// server) next to `otherix version --client`, the process floor. Several
// CLI binaries can be compared in one run (-cli before=PATH,after=PATH),
// their runs interleaved so that load changes hit them alike; each CLI has
// its own config (and TLS session cache), logged in once before timing.
//
//	go run ./test/bench/cli -api bin/otherix-api -cli after=bin/otherix -runs 40 -rounds 3
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/otherix/otherix/test/bench/benchcluster"
)

const (
	adminEmail    = "admin@bench.test"
	adminPassword = "bench-admin-password-1"
)

// commands are the timed invocations, by label.
var commands = []struct {
	label string
	args  []string
}{
	{"version --client", []string{"version", "--client"}},
	{"version", []string{"version"}},
	{"vm list", []string{"vm", "list"}},
}

func main() {
	api := flag.String("api", "bin/otherix-api", "otherix-api binary")
	clis := flag.String("cli", "bin=bin/otherix", "LABEL=PATH[,LABEL=PATH…] of otherix binaries to compare")
	runs := flag.Int("runs", 30, "runs of each command per round")
	rounds := flag.Int("rounds", 3, "rounds")
	conns := flag.Int("conns", 200, "connections per kind for the in-process handshake timing (0: skip)")
	flag.Parse()
	inprocConns = *conns
	if err := run(*api, *clis, *runs, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench cli:", err)
		os.Exit(1)
	}
}

type cli struct {
	label, path string
	env         []string
}

func run(apiBin, clis string, runs, rounds int) error {
	dir, err := os.MkdirTemp("", "oxcli")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr, err := benchcluster.FreeAddr()
	if err != nil {
		return err
	}
	agentAddr, err := benchcluster.FreeAddr()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "OTHERIX_ADMIN__EMAIL="+adminEmail, "OTHERIX_ADMIN__PASSWORD="+adminPassword,
		"OTHERIX_AGENT_LISTEN="+agentAddr)
	p, err := benchcluster.StartProc(filepath.Join(dir, "api.log"), env, apiBin, "--data-dir", filepath.Join(dir, "api"), "--listen", addr)
	if err != nil {
		return err
	}
	defer p.Stop()
	var cs []cli
	for _, kv := range strings.Split(clis, ",") {
		label, path, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-cli %q: want LABEL=PATH", kv)
		}
		c := cli{label: label, path: path, env: append(os.Environ(), "OTHERIX_CONFIG="+filepath.Join(dir, "cli-"+label, "config"))}
		if err := login(c, "https://"+addr, filepath.Join(dir, "api", "pki", "ca.pem"), p); err != nil {
			return err
		}
		cs = append(cs, c)
		if _, _, err := timeCmd(c, "vm", "list"); err != nil {
			return err
		}
		_, serr := os.Stat(filepath.Join(dir, "cli-"+label, "tls-sessions"))
		fmt.Printf("%s: TLS session cache file after a first call: %v\n", label, serr == nil)
	}
	fmt.Printf("otherix-api %s; %d runs per command and round; load %s\n", apiBin, runs, loadavg())
	for r := 1; r <= rounds; r++ {
		d := map[string][]time.Duration{}
		for i := 0; i < runs; i++ {
			// Rotate the order so no binary or command always goes first.
			for j := range cs {
				c := cs[(i+j)%len(cs)]
				for k := range commands {
					cmd := commands[(i+k)%len(commands)]
					t, cpu, err := timeCmd(c, cmd.args...)
					if err != nil {
						return err
					}
					d[c.label+"|"+cmd.label] = append(d[c.label+"|"+cmd.label], t)
					d["cpu|"+c.label+"|"+cmd.label] = append(d["cpu|"+c.label+"|"+cmd.label], cpu)
				}
			}
		}
		fmt.Printf("\nround %d (load after %s)\n", r, loadavg())
		for _, c := range cs {
			floor := p50(d[c.label+"|version --client"])
			for _, cmd := range commands {
				m := p50(d[c.label+"|"+cmd.label])
				cpu := p50(d["cpu|"+c.label+"|"+cmd.label])
				fmt.Printf("  %-8s %-18s wall p50 %6.2f ms  p90 %6.2f ms  %.2fx version --client | CPU p50 %6.2f ms  %.2fx\n", c.label, cmd.label,
					ms(m), ms(pct(d[c.label+"|"+cmd.label], 0.9)), float64(m)/float64(floor),
					ms(cpu), float64(cpu)/float64(p50(d["cpu|"+c.label+"|version --client"])))
			}
			fmt.Printf("  %-8s vm list ÷ version: wall %.2fx, CPU %.2fx\n", c.label,
				float64(p50(d[c.label+"|vm list"]))/float64(p50(d[c.label+"|version"])),
				float64(p50(d["cpu|"+c.label+"|vm list"]))/float64(p50(d["cpu|"+c.label+"|version"])))
		}
	}
	// Last: these are anonymous requests, which the API rate-limits.
	if inprocConns > 0 {
		fmt.Println()
		return handshakes("https://"+addr, filepath.Join(dir, "api", "pki", "ca.pem"), inprocConns)
	}
	return nil
}

// login logs c in, retrying until the API is ready.
func login(c cli, url, caFile string, api *benchcluster.Proc) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		fp, err := benchcluster.CAFingerprint(caFile)
		if err == nil {
			cmd := exec.Command(c.path, "login", url, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp)
			cmd.Env, cmd.Stdin = c.env, strings.NewReader(adminPassword)
			out, lerr := cmd.CombinedOutput()
			if lerr == nil {
				return nil
			}
			err = fmt.Errorf("%s login: %v: %s", c.label, lerr, out)
		}
		select {
		case <-api.Done():
			return fmt.Errorf("otherix-api exited: %s", benchcluster.Tail(api.Out.Name(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond) // polling a process coming up, not synchronising tests
	}
}

// timeCmd runs one invocation and returns its wall time and the CPU time
// (user + system) the process used: on a loaded host the wall time is
// mostly waiting for a core, the CPU time what the invocation costs.
func timeCmd(c cli, args ...string) (wall, cpu time.Duration, err error) {
	cmd := exec.Command(c.path, args...)
	cmd.Env = c.env
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	wall = time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("%s %v: %v: %s", c.label, args, err, out)
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func p50(d []time.Duration) time.Duration { return pct(d, 0.5) }

func pct(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}
