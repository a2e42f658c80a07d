// Command failover measures what a leader's death costs a CLI user: three
// real otherix-api replicas on loopback, the otherix CLI logged in to one of
// them (so it knows all three), then, -kills times: SIGKILL of the Raft
// leader and, at once, `otherix network create` until one succeeds. The
// figure is the time from the kill to that first successful write, through
// the CLI's own failover and retries (each CLI run starts at the context's
// server, which may be the dead replica). The killed replica is restarted
// and the cluster waited on to have three healthy voters before the next
// kill. It prints every figure, then p50 and max as a Markdown row for
// BENCHMARKS.md.
//
//	make build && go run ./test/bench/failover -bin bin -kills 10
package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	adminEmail    = "admin@bench.test"
	adminPassword = "bench-admin-password-1"
)

// verbose prints the measured CLI runs' stderr (failover notes, retries).
var verbose bool

type replica struct {
	name, dir, rest, agent, peer string
	cmd                          *exec.Cmd
	done                         chan struct{}
	out                          bytes.Buffer
}

type bench struct {
	bin, base string
	rs        []*replica
	cliEnv    []string
}

func main() {
	bin := flag.String("bin", "bin", "directory holding otherix-api and otherix (make build)")
	kills := flag.Int("kills", 10, "leader kills to measure")
	flag.BoolVar(&verbose, "v", false, "print what the CLI said on stderr during each measured write")
	flag.Parse()
	base, err := os.MkdirTemp("", "otherix-failover-bench-")
	if err != nil {
		fail(err)
	}
	b := &bench{base: base, cliEnv: append(os.Environ(), "OTHERIX_CONFIG="+filepath.Join(base, "cli.yaml"))}
	if b.bin, err = filepath.Abs(*bin); err != nil {
		fail(err)
	}
	defer os.RemoveAll(base)
	defer b.stopAll()
	if err := b.run(*kills); err != nil {
		b.stopAll()
		for _, r := range b.rs {
			fmt.Fprintf(os.Stderr, "--- %s output (tail):\n%s\n", r.name, tail(r.out.String(), 30))
		}
		os.RemoveAll(base) // fail exits: the defers do not run
		fail(err)
	}
}

func (b *bench) run(kills int) error {
	for _, name := range []string{"r1", "r2", "r3"} {
		b.rs = append(b.rs, &replica{name: name, dir: filepath.Join(b.base, name), rest: freePort(), agent: freePort(), peer: freePort()})
	}
	if err := b.start(b.rs[0], ""); err != nil {
		return err
	}
	if err := wait("r1 ready", 60*time.Second, func() bool { return b.ready(b.rs[0]) }); err != nil {
		return err
	}
	fp, err := fingerprint(filepath.Join(b.rs[0].dir, "pki", "ca.pem"))
	if err != nil {
		return err
	}
	if _, err := b.cliIn(adminPassword+"\n", "login", "https://"+b.rs[0].rest, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp); err != nil {
		return err
	}
	for _, r := range b.rs[1:] {
		tok, err := b.cli("cluster", "join-token", "create", "--replica")
		if err != nil {
			return err
		}
		if err := b.start(r, strings.TrimSpace(tok)); err != nil {
			return err
		}
		if err := wait(r.name+" listed", 60*time.Second, func() bool { _, ok := b.members()[r.name]; return ok }); err != nil {
			return err
		}
	}
	if err := wait("three healthy voters, all ready", 120*time.Second, b.allReady); err != nil {
		return err
	}
	// Log in again now that there are three: the context learns them all.
	if _, err := b.cliIn(adminPassword+"\n", "login", "https://"+b.rs[0].rest, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp); err != nil {
		return err
	}
	fmt.Printf("failover bench: 3 replicas on loopback, %d leader kills, load %s\n", kills, loadavg())
	var took []time.Duration
	for k := 1; k <= kills; k++ {
		leader := b.leader()
		if leader == nil {
			return errors.New("no leader listed")
		}
		if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return err
		}
		killed := time.Now()
		runs := 0
		for {
			runs++
			_, err := b.cli("--timeout", "10s", "network", "create", fmt.Sprintf("fo-bench-%d", k), "--cidr", fmt.Sprintf("10.201.%d.0/24", k))
			if err == nil || strings.Contains(err.Error(), "already exists") {
				break
			}
			if time.Since(killed) > 60*time.Second {
				return fmt.Errorf("kill %d: no write after 60s: %v", k, err)
			}
		}
		d := time.Since(killed)
		took = append(took, d)
		fmt.Printf("kill %2d: leader %s; first write after %s (%d CLI run(s))\n", k, leader.name, d.Round(time.Millisecond), runs)
		if verbose {
			fmt.Print(lastStderr)
		}
		<-leader.done
		if err := b.restart(leader); err != nil {
			return err
		}
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	p50 := sorted[(len(sorted)-1)/2]
	fmt.Printf("\n| leader SIGKILL → first write through the CLI (%d kills) | p50 %s | max %s |\n", kills,
		p50.Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
	return nil
}

// start runs otherix-api for r; token, when set, joins it through r1.
func (b *bench) start(r *replica, token string) error {
	args := []string{"--data-dir", r.dir, "--listen", r.rest, "--agent-listen", r.agent, "--peer-listen", r.peer, "--name", r.name}
	if token != "" {
		args = append(args, "--join", "https://"+b.rs[0].agent, "--join-token", token)
	}
	r.cmd = exec.Command(filepath.Join(b.bin, "otherix-api"), args...)
	r.cmd.Env = append(os.Environ(), "OTHERIX_ADMIN__EMAIL="+adminEmail, "OTHERIX_ADMIN__PASSWORD="+adminPassword, "OTHERIX_LOG__LEVEL=warn")
	r.out.Reset()
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		return err
	}
	r.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(r.cmd, r.done)
	return nil
}

// allReady reports whether every replica serves (/readyz) and the
// membership lists three healthy voters: a replica promoted moments ago may
// still be starting its control plane.
func (b *bench) allReady() bool {
	for _, r := range b.rs {
		if !b.ready(r) {
			return false
		}
	}
	return b.threeVoters()
}

// restart starts a killed replica on its data dir and waits until all three
// serve. otherix-api exits when its first store writes meet a leader change
// (bootstrap admin), which happens when it restarts during an election: it
// is started again then, and that is counted.
func (b *bench) restart(r *replica) error {
	for try := 1; ; try++ {
		if err := b.start(r, ""); err != nil {
			return err
		}
		err := wait(r.name+" back, all ready", 120*time.Second, func() bool {
			select {
			case <-r.done:
				return true
			default:
			}
			return b.allReady()
		})
		select {
		case <-r.done:
			if try == 5 {
				return fmt.Errorf("%s exited at each of %d restarts:\n%s", r.name, try, tail(r.out.String(), 5))
			}
			fmt.Printf("  (%s exited at restart: %s; starting it again)\n", r.name, lastLine(r.out.String()))
			continue
		default:
		}
		return err
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// stopAll kills every replica this command started, by its pid.
func (b *bench) stopAll() {
	for _, r := range b.rs {
		if r.cmd == nil || r.cmd.Process == nil {
			continue
		}
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.done
		}
	}
}

// lastStderr is what the last CLI run wrote on stderr.
var lastStderr string

func (b *bench) cli(args ...string) (string, error) { return b.cliIn("", args...) }

func (b *bench) cliIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(b.bin, "otherix"), args...)
	cmd.Env = b.cliEnv
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	lastStderr = errOut.String()
	if err != nil {
		return out.String(), fmt.Errorf("otherix %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

type member struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	IsLeader bool   `json:"is_leader"`
	Healthy  bool   `json:"healthy"`
}

// members asks the cluster (through the CLI's failover) for its members.
func (b *bench) members() map[string]member {
	out, err := b.cli("--timeout", "5s", "cluster", "members", "-o", "json")
	if err != nil {
		return nil
	}
	var l struct{ Items []member }
	if json.Unmarshal([]byte(out), &l) != nil {
		return nil
	}
	m := map[string]member{}
	for _, it := range l.Items {
		m[it.Name] = it
	}
	return m
}

func (b *bench) threeVoters() bool {
	n := 0
	for _, m := range b.members() {
		if m.Role == "voter" && m.Healthy {
			n++
		}
	}
	return n == 3
}

func (b *bench) leader() *replica {
	for name, m := range b.members() {
		if m.IsLeader {
			for _, r := range b.rs {
				if r.name == name {
					return r
				}
			}
		}
	}
	return nil
}

// ready reports whether r's /readyz answers 200 over TLS under its CA.
func (b *bench) ready(r *replica) bool {
	pemBytes, err := os.ReadFile(filepath.Join(r.dir, "pki", "ca.pem"))
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return false
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + r.rest + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// wait polls cond every 100 ms until it holds or d passes.
func wait(what string, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func fingerprint(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return "", fmt.Errorf("%s: no PEM", path)
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:]), nil
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

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "failover bench:", err)
	os.Exit(1)
}
