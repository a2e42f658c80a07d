// Package benchcluster starts a real otherix-api and one real otherix-agent
// for the benchmarks that drive the built binaries (test/bench/vm,
// test/bench/console), as test/e2e starts them.
package benchcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The admin the benchmark API bootstraps and logs in as.
const (
	adminEmail    = "admin@bench.test"
	adminPassword = "bench-admin-password-1"
)

// Cluster is a real otherix-api and one real otherix-agent (node n1) on this
// host, as test/e2e starts them, with a CLI config logged in to the API.
type Cluster struct {
	Bin      string
	Dir      string
	API      *Proc
	Agent    *Proc
	URL      string
	HTTP     *http.Client
	Token    string
	CLIEnv   []string
	ImageURL string
	// state is the agent's state dir; QEMUs left behind are found by the
	// pid files under its run dir.
	State string
	// Accel is the accelerator node n1 reports it uses (kvm or tcg), and
	// AccelReason how the agent judged /dev/kvm.
	Accel, AccelReason string

	// ctx is cancelled, with the dead process's error as its cause, when
	// the API or the agent exits before Stop: every request and wait then
	// fails at once instead of at its timeout.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// stopping is closed by Stop, so its own SIGTERMs are not reported as
	// a component dying.
	stopping chan struct{}
}

// Proc is a process this benchmark started; it is stopped by its pid only.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *os.File
	done chan struct{}
	// waitErr is cmd.Wait's answer, set before done is closed.
	waitErr error
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// logTailLines is how much of a dead component's log an error carries.
const logTailLines = 40

// DiedError says which component exited, how, and the end of its log; the
// log file itself is left in place (the benchmarks keep their work dir when
// they fail).
func (p *Proc) DiedError(name string) error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", name, p.waitErr, p.Out.Name(), Tail(p.Out.Name(), logTailLines))
}

// Tail is the last n lines of the file at path, or a note saying why not.
func Tail(path string, n int) string {
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

func StartProc(logPath string, env []string, name string, args ...string) (*Proc, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Cmd: cmd, Out: out, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM to the process and waits, SIGKILL after 20 s.
func (p *Proc) Stop() {
	if p == nil {
		return
	}
	_ = syscall.Kill(p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.Out.Close()
}

func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Start starts the API on dir/api, enrolls and starts an agent on a
// short temp state dir with --accel accel, and logs the CLI in.
// Start runs the API with apiEnv added to its environment and the agent with
// agentArgs and agentEnv added to its own; logs go to dir.
func Start(bin, dir, imageURL string, apiEnv, agentArgs, agentEnv []string) (*Cluster, error) {
	c := newCluster(bin, dir, imageURL)
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	agentAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "api")
	env := append(append(os.Environ(), "OTHERIX_ADMIN__EMAIL="+adminEmail, "OTHERIX_ADMIN__PASSWORD="+adminPassword,
		"OTHERIX_AGENT_LISTEN="+agentAddr), apiEnv...)
	c.API, err = StartProc(filepath.Join(dir, "api.log"), env, filepath.Join(bin, "otherix-api"), "--data-dir", dataDir, "--listen", addr)
	if err != nil {
		return nil, err
	}
	c.watch(c.API, "otherix-api")
	c.URL = "https://" + addr
	caFile := filepath.Join(dataDir, "pki", "ca.pem")
	if err := c.waitReady(caFile); err != nil {
		return c, err
	}
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	if code, err := c.Call("POST", "/v1/auth/login", map[string]string{"email": adminEmail, "password": adminPassword}, &pair); err != nil || code != 200 {
		return c, fmt.Errorf("login: %d %v", code, err)
	}
	c.Token = pair.AccessToken
	var jt struct {
		Token string `json:"token"`
	}
	if code, err := c.Call("POST", "/v1/nodes/join-tokens", map[string]string{"ttl": "10m"}, &jt); err != nil || code != 201 {
		return c, fmt.Errorf("join token: %d %v", code, err)
	}
	// Short: QEMU's unix sockets live under the agent's run dir.
	state, err := os.MkdirTemp("", "oxb")
	if err != nil {
		return c, err
	}
	c.State = state
	if out, err := exec.Command(filepath.Join(bin, "otherix-agent"), "bootstrap", "--server", "https://"+agentAddr,
		"--token", jt.Token, "--name", "n1", "--state-dir", state).CombinedOutput(); err != nil {
		return c, fmt.Errorf("agent bootstrap: %v\n%s", err, out)
	}
	// No data plane: a benchmark must not build bridges and WireGuard in
	// the host namespace.
	// Benchmarks serve their images over loopback, which the agent refuses
	// to fetch from unless allowed.
	args := append([]string{"serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--data-plane", "off",
		"--image-allow", "127.0.0.1/32"}, agentArgs...)
	c.Agent, err = StartProc(filepath.Join(dir, "agent.log"), append(os.Environ(), agentEnv...), filepath.Join(bin, "otherix-agent"), args...)
	if err != nil {
		return c, err
	}
	c.watch(c.Agent, "otherix-agent")
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for tick := time.NewTicker(100 * time.Millisecond); ; {
		var n struct {
			Phase  string `json:"phase"`
			Status struct {
				Capacity struct {
					Accelerator string `json:"accelerator"`
					KVMReason   string `json:"kvm_reason"`
				} `json:"capacity"`
			} `json:"status"`
		}
		if code, err := c.Call("GET", "/v1/nodes/n1", nil, &n); err == nil && code == 200 && n.Phase == "ready" {
			tick.Stop()
			c.Accel, c.AccelReason = n.Status.Capacity.Accelerator, n.Status.Capacity.KVMReason
			break
		}
		select {
		case <-c.ctx.Done():
			tick.Stop()
			return c, context.Cause(c.ctx)
		case <-deadline.C:
			tick.Stop()
			return c, fmt.Errorf("node n1 not ready after 60s; last lines of %s:\n%s", c.Agent.Out.Name(), Tail(c.Agent.Out.Name(), logTailLines))
		case <-tick.C:
		}
	}
	cfg := filepath.Join(dir, "cli-config")
	c.CLIEnv = append(os.Environ(), "OTHERIX_CONFIG="+cfg)
	fp, err := CAFingerprint(caFile)
	if err != nil {
		return c, err
	}
	cmd := exec.Command(filepath.Join(bin, "otherix"), "login", c.URL, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp)
	cmd.Env = c.CLIEnv
	cmd.Stdin = strings.NewReader(adminPassword)
	if out, err := cmd.CombinedOutput(); err != nil {
		return c, fmt.Errorf("otherix login: %v\n%s", err, out)
	}
	return c, nil
}

func newCluster(bin, dir, imageURL string) *Cluster {
	c := &Cluster{Bin: bin, Dir: dir, ImageURL: imageURL, stopping: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	return c
}

// watch cancels the cluster's context when p exits before Stop, with an
// error carrying the tail of p's log: a component that dies (an agent
// refusing --accel kvm without /dev/kvm, an API that cannot open its data
// dir) fails the benchmark at once, saying why.
func (c *Cluster) watch(p *Proc, name string) {
	go func() {
		select {
		case <-p.done:
			select {
			case <-c.stopping:
			default:
				c.cancel(p.DiedError(name))
			}
		case <-c.stopping:
		}
	}()
}

// Err is nil while the API and the agent run, and says which one died (with
// the end of its log) once one has.
func (c *Cluster) Err() error {
	if c.ctx.Err() == nil {
		return nil
	}
	return context.Cause(c.ctx)
}

func (c *Cluster) waitReady(caFile string) error {
	for t0 := time.Now(); time.Since(t0) < 60*time.Second; time.Sleep(50 * time.Millisecond) {
		if err := c.Err(); err != nil {
			return err
		}
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			continue
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			continue
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16}}
		resp, err := hc.Get(c.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				c.HTTP = hc
				return nil
			}
		}
		hc.CloseIdleConnections()
	}
	return fmt.Errorf("otherix-api not ready after 60s; last lines of %s:\n%s", c.API.Out.Name(), Tail(c.API.Out.Name(), logTailLines))
}

func CAFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", fmt.Errorf("%s holds no PEM", path)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// call sends a JSON request with the admin's token and decodes the answer.
func (c *Cluster) Call(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	if err := c.Err(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, 90*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if cerr := c.Err(); cerr != nil {
			return 0, cerr
		}
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(data) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %q: %w", data, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	return resp.StatusCode, nil
}

type TaskView struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Message string `json:"message"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type VMView struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

func Terminal(s string) bool { return s == "success" || s == "failed" || s == "cancelled" }

// waitTask long-polls the task until it is Terminal.
func (c *Cluster) WaitTask(id string) (TaskView, error) {
	for {
		var t TaskView
		if _, err := c.Call("GET", "/v1/tasks/"+id+"?wait=30s", nil, &t); err != nil {
			return t, err
		}
		if Terminal(t.State) {
			if t.State != "success" {
				return t, fmt.Errorf("task %s %s: %s %+v", id, t.State, t.Message, t.Error)
			}
			return t, nil
		}
	}
}

// stop stops the agent and the API, then kills any QEMU the agent left
// (by the pids in its run dir) and removes the agent's state.
func (c *Cluster) Stop() {
	select {
	case <-c.stopping:
	default:
		close(c.stopping)
	}
	c.Agent.Stop()
	c.API.Stop()
	if c.State == "" {
		return
	}
	pids, _ := filepath.Glob(filepath.Join(c.State, "run", "*", "qemu.pid"))
	for _, f := range pids {
		var pid int
		if b, err := os.ReadFile(f); err == nil {
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	os.RemoveAll(c.State)
}
