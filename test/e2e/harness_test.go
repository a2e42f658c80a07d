//go:build e2e

// Package e2e runs the real binaries built by `make build` against each other.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir is where `make build` puts the binaries; `make test-e2e` builds first.
func binDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "otherix-api")); err != nil {
		t.Fatalf("bin/otherix-api missing: run `make build` (make test-e2e does): %v", err)
	}
	return dir
}

// apiProcess is one running otherix-api.
type apiProcess struct {
	t   *testing.T
	cmd *exec.Cmd
	URL string
	// AgentURL is the agent-facing HTTPS listener (enrollment).
	AgentURL string
	stderr   *bytes.Buffer
	// done is closed when the process has exited; waitErr is then its status.
	done    chan struct{}
	waitErr error
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startAPI starts otherix-api on dataDir with extra OTHERIX_ settings and
// waits until /readyz answers 200.
func startAPI(t *testing.T, dataDir string, env ...string) *apiProcess {
	t.Helper()
	return startAPIAt(t, dataDir, freePort(t), env...)
}

// startAPIAt is startAPI with the REST listener at addr, so a restarted API
// keeps its address.
func startAPIAt(t *testing.T, dataDir, addr string, env ...string) *apiProcess {
	t.Helper()
	return startAPIFrom(t, binDir(t), dataDir, addr, env...)
}

// startAPIFrom is startAPIAt with the otherix-api of another build (bin
// is its directory): the upgrade test runs the previous release's.
func startAPIFrom(t *testing.T, bin, dataDir, addr string, env ...string) *apiProcess {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "otherix-api"), "--data-dir", dataDir, "--listen", addr)
	// Every route but health, login and a few others needs a bearer token:
	// the API bootstraps this admin on first boot, and the test logs in as it.
	// Each API gets its own agent listener port so APIs can run side by side;
	// an OTHERIX_AGENT_LISTEN in env wins (exec keeps the last duplicate).
	agentAddr := freePort(t)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "OTHERIX_AGENT_LISTEN="); ok {
			agentAddr = v
		}
	}
	cmd.Env = append(append(os.Environ(), "OTHERIX_ADMIN__EMAIL="+adminEmail, "OTHERIX_ADMIN__PASSWORD="+adminPassword,
		"OTHERIX_AGENT_LISTEN="+agentAddr), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start otherix-api: %v", err)
	}
	p := &apiProcess{t: t, cmd: cmd, URL: "https://" + addr, AgentURL: "https://" + agentAddr, stderr: &stderr, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	// The REST listener serves TLS with the cluster CA, which the API writes
	// to <data_dir>/pki/ca.pem at start: wait for the file, then poll /readyz
	// with a client that trusts it. ca.pem is read again at every attempt, as
	// a data dir from an earlier run may hold a stale one until it is rewritten.
	caFile := filepath.Join(dataDir, "pki", "ca.pem")
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("otherix-api exited while starting: %v\n%s", p.waitErr, stderr.String())
		default:
		}
		if client := caClient(caFile); client != nil {
			resp, err := client.Get(p.URL + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					clients.Store(addr, client)
					login(t, p.URL)
					return p
				}
			}
			client.CloseIdleConnections()
		}
		if time.Now().After(deadline) {
			t.Fatalf("otherix-api not ready after 60s\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clients holds the HTTP client of each API, by host:port, for call: each
// trusts that API's cluster CA.
var clients sync.Map

// caClient returns a client trusting the CA certificate in caFile, or nil
// while the file is missing or not (yet) a complete certificate.
func caClient(caFile string) *http.Client {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
	}}
}

// kill9 ends the process the way a crash or OOM kill would.
func (p *apiProcess) kill9() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatal("otherix-api did not die after SIGKILL")
	}
}

// stop asks the process to shut down and waits for a clean exit.
func (p *apiProcess) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.waitErr != nil {
			p.t.Fatalf("otherix-api exited with %v after SIGTERM\n%s", p.waitErr, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		p.t.Fatal("otherix-api did not stop after SIGTERM")
	}
}

func (p *apiProcess) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// The admin every test API bootstraps and logs in as.
const (
	adminEmail    = "admin@e2e.test"
	adminPassword = "e2e-admin-password-1"
)

// bearers holds the access token of each API, by host:port, for call.
var bearers sync.Map

// login logs in to the API at base as the bootstrapped admin and keeps the
// access token for call. A restarted API on the same data dir keeps the admin
// (bootstrap runs only on first boot), so logging in again just works.
func login(t *testing.T, base string) {
	t.Helper()
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	if code := call(t, "POST", base+"/v1/auth/login", map[string]string{"email": adminEmail, "password": adminPassword}, &pair); code != http.StatusOK || pair.AccessToken == "" {
		t.Fatalf("login as %s: status %d", adminEmail, code)
	}
	u, _ := url.Parse(base)
	bearers.Store(u.Host, pair.AccessToken)
}

// call sends a JSON request and decodes a JSON answer into out (if non-nil).
func call(t *testing.T, method, target string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok, ok := bearers.Load(req.URL.Host); ok {
		req.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	client, ok := clients.Load(req.URL.Host)
	if !ok {
		t.Fatalf("%s %s: no API started on %s", method, target, req.URL.Host)
	}
	resp, err := client.(*http.Client).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, target, data, err)
		}
	}
	return resp.StatusCode
}

type task struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	State   string `json:"state"`
	Message string `json:"message"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type vm struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

type accepted struct {
	Task task `json:"task"`
	VM   vm   `json:"vm"`
}

func createVM(t *testing.T, base, name string) accepted {
	t.Helper()
	var a accepted
	body := map[string]any{"name": name, "spec": map[string]any{"image": map[string]any{"url": "https://images.example/debian-12.qcow2"}}}
	if code := call(t, "POST", base+"/v1/vms", body, &a); code != http.StatusAccepted {
		t.Fatalf("create %s: status %d", name, code)
	}
	return a
}

func getTask(t *testing.T, base, id string) task {
	t.Helper()
	var tk task
	if code := call(t, "GET", base+"/v1/tasks/"+id, nil, &tk); code != http.StatusOK {
		t.Fatalf("get task %s: status %d", id, code)
	}
	return tk
}

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}
