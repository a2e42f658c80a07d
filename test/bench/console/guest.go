package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/otherix/otherix/test/bench/benchcluster"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
	"github.com/otherix/otherix/test/guest"
)

// runGuest measures the whole path with real processes: the client's
// WebSocket to otherix-api, its proxy, the mutual-TLS WebSocket to
// otherix-agent, the agent's hub, QEMU's serial chardev and the test
// guest's tty, which echoes (under TCG, so the guest's own time is in the
// figure).
func runGuest(bin string, keys, n, burst, cycles int, keep bool) (err error) {
	for _, b := range []string{"otherix-api", "otherix-agent"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s not built (make build): %w", b, err)
		}
	}
	cache, err := guest.CacheDir()
	if err != nil {
		return err
	}
	img, out, err := guest.Build(cache)
	if err != nil {
		return fmt.Errorf("build the test guest: %w\n%s", err, out)
	}
	images := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, img)
	}))
	defer images.Close()
	dir, err := os.MkdirTemp("", "oxcg")
	if err != nil {
		return err
	}
	// The logs stay when asked to, and when the run fails: the error names
	// them.
	defer func() {
		if keep || err != nil {
			fmt.Println("guest: logs kept in", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	// gctrace: the agent's live heap after each collection goes to its log,
	// the only view of its heap (it has no profiling endpoint).
	bc, err := benchcluster.Start(bin, dir, images.URL+"/guest.qcow2", nil, []string{"--accel", "tcg"}, []string{"GODEBUG=gctrace=1"})
	if bc != nil {
		defer bc.Stop()
	}
	if err != nil {
		return err
	}
	fmt.Printf("guest: accelerator %s (node n1: %s)\n", bc.Accel, bc.AccelReason)
	c := &cluster{bc}
	var a struct {
		Task benchcluster.TaskView `json:"task"`
		VM   benchcluster.VMView   `json:"vm"`
	}
	spec := map[string]any{"image": map[string]any{"url": c.ImageURL}, "cpus": 1, "memory_mib": 256, "disk_gib": 1}
	if _, err := c.Call("POST", "/v1/vms", map[string]any{"name": "con1", "spec": spec}, &a); err != nil {
		return err
	}
	if _, err := c.WaitTask(a.Task.ID); err != nil {
		return err
	}
	dialer, err := c.consoleDialer()
	if err != nil {
		return err
	}
	s, err := c.openConsole(dialer, a.VM.ID, messages.ConsoleInteractive, true)
	if err != nil {
		return err
	}
	defer s.close()
	if _, err := s.waitFor([]byte(guest.ReadyMarker), 5*time.Minute); err != nil {
		return fmt.Errorf("guest boot: %w", err)
	}
	// The root shell on ttyS0 may start after the marker: retype until
	// it answers.
	for i := 0; ; i++ {
		if err := s.type_([]byte("echo RDY-$((2+3))\r")); err != nil {
			return err
		}
		if _, err := s.waitFor([]byte("RDY-5"), 3*time.Second); err == nil {
			break
		} else if i == 40 {
			return fmt.Errorf("the guest's shell does not answer: %w", err)
		}
	}
	// cat, so that what is typed is echoed by the tty line discipline
	// (canonical mode, ECHO), not redrawn by the shell's line editor.
	if err := s.type_([]byte("cat\r")); err != nil {
		return err
	}
	s.drain(time.Second)
	// Round trips, interleaved in blocks: through otherix-api (as every
	// client attaches), then straight to otherix-agent with the control
	// plane's client certificate (what the API's proxy dials), so the
	// API's hop shows as the difference under the same load.
	s.close()
	direct, err := c.agentDialer()
	if err != nil {
		return err
	}
	paths := []struct {
		name string
		open func() (*session, error)
	}{
		{"client→otherix-api→otherix-agent→QEMU→guest tty→back", func() (*session, error) {
			return c.openConsole(dialer, a.VM.ID, messages.ConsoleInteractive, true)
		}},
		{"client (control-plane cert)→otherix-agent→QEMU→guest tty→back", func() (*session, error) { return direct(a.VM.ID) }},
	}
	rts := make([][]time.Duration, len(paths))
	fmt.Printf("guest: %s\n", load())
	for block := 0; block < 4; block++ {
		i := block % 2
		var cs *session
		for try := 0; ; try++ { // the previous writer's slot frees asynchronously
			if cs, err = paths[i].open(); err == nil || try == 50 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		cs.drain(500 * time.Millisecond)
		if _, err := roundTrips(cs, 10, 0, nil, 0); err != nil { // warm-up
			cs.close()
			return err
		}
		cs.type_([]byte("\r"))
		cs.drain(300 * time.Millisecond)
		rt, err := roundTrips(cs, keys/2, 60, []byte("\r"), 300*time.Millisecond)
		cs.type_([]byte("\r"))
		cs.close()
		if err != nil {
			return fmt.Errorf("%s: %w", paths[i].name, err)
		}
		rts[i] = append(rts[i], rt...)
	}
	for i, p := range paths {
		fmt.Printf("guest: round trip keystroke→echo (%s, TCG): %s\n", p.name, summarize(rts[i]))
	}
	if s, err = c.openConsole(dialer, a.VM.ID, messages.ConsoleInteractive, true); err != nil {
		return err
	}
	defer s.close()

	// Output throughput: the guest prints burst bytes (x lines) as fast as
	// its UART goes.
	s.type_([]byte{3}) // Ctrl+C ends cat
	s.drain(time.Second)
	lines := burst / 16
	cmd := fmt.Sprintf("yes xxxxxxxxxxxxxxx | head -n %d; echo BURST-$((4+4))-END\r", lines)
	before := s.counted()
	t0 := time.Now()
	if err := s.type_([]byte(cmd)); err != nil {
		return err
	}
	at, err := s.waitFor([]byte("BURST-8-END"), 10*time.Minute)
	if err != nil {
		return err
	}
	got := s.counted() - before
	fmt.Printf("guest: %d lines of 16 bytes printed by the guest (%.2f MiB with CRs): %.3f MiB/s (%s)\n",
		lines, mib(got), mib(got)/at.Sub(t0).Seconds(), ms(at.Sub(t0)))

	// Memory per open session, per process (RSS): open n, measure, close
	// them all; twice, so growth that survives a close would show.
	apiPid, agentPid := c.API.Cmd.Process.Pid, c.Agent.Cmd.Process.Pid
	time.Sleep(time.Second)
	for cycle := 1; cycle <= cycles; cycle++ {
		api0, agent0 := rssKiB(apiPid), rssKiB(agentPid)
		list := make([]*session, 0, n)
		for range n {
			r, err := c.openConsole(dialer, a.VM.ID, messages.ConsoleReadOnly, false)
			if err != nil {
				for _, r := range list {
					r.close()
				}
				return err
			}
			list = append(list, r)
		}
		time.Sleep(2 * time.Second)
		api1, agent1 := rssKiB(apiPid), rssKiB(agentPid)
		for _, r := range list {
			r.close()
		}
		time.Sleep(4 * time.Second)
		api2, agent2 := rssKiB(apiPid), rssKiB(agentPid)
		fmt.Printf("guest: memory cycle %d, %d read-only sessions: otherix-api RSS %.1f → %.1f MiB = %.1f KiB/session (after closing: %.1f MiB); otherix-agent RSS %.1f → %.1f MiB = %.1f KiB/session (after closing: %.1f MiB; live heap at its last GC: %s)\n",
			cycle, n, float64(api0)/1024, float64(api1)/1024, float64(api1-api0)/float64(n), float64(api2)/1024,
			float64(agent0)/1024, float64(agent1)/1024, float64(agent1-agent0)/float64(n), float64(agent2)/1024, lastGC(filepath.Join(dir, "agent.log")))
	}
	return nil
}

// agentDialer opens an interactive console straight on the agent, as the
// API's proxy does: a control-plane client certificate from the cluster CA
// in the API's data dir, the node's endpoint from the API.
// cluster is the benchmark's cluster with the console-specific calls.
type cluster struct{ *benchcluster.Cluster }

func (c *cluster) agentDialer() (func(vm string) (*session, error), error) {
	certPEM, err := os.ReadFile(filepath.Join(c.Dir, "api", "pki", "ca.pem"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(c.Dir, "api", "pki", "ca-key.pem"))
	if err != nil {
		return nil, err
	}
	ca, err := security.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueClientCert(security.ControlPlaneCN, time.Now(), 0)
	if err != nil {
		return nil, err
	}
	var n struct {
		Endpoint string `json:"endpoint"`
	}
	if _, err := c.Call("GET", "/v1/nodes/n1", nil, &n); err != nil {
		return nil, err
	}
	ac := agentclient.New(ca.Pool(), func() (*tls.Certificate, error) { return &cert, nil })
	node := agentclient.Node{Name: "n1", Endpoint: n.Endpoint}
	return func(vm string) (*session, error) {
		ws, err := ac.Console(context.Background(), node, vm, messages.ConsoleInteractive, false)
		if err != nil {
			return nil, err
		}
		return newSession(ws, true, 0), nil
	}, nil
}

// consoleDialer trusts the cluster's CA, as the CLI does after login.
func (c *cluster) consoleDialer() (*websocket.Dialer, error) {
	pemBytes, err := os.ReadFile(filepath.Join(c.Dir, "api", "pki", "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("no CA in ca.pem")
	}
	return &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		HandshakeTimeout: 10 * time.Second, ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10}, nil
}

// openConsole asks for a token and attaches with it.
func (c *cluster) openConsole(d *websocket.Dialer, vm, mode string, keep bool) (*session, error) {
	var tok messages.ConsoleToken
	if _, err := c.Call("POST", "/v1/vms/"+vm+"/console", messages.ConsoleTokenRequest{Mode: mode}, &tok); err != nil {
		return nil, err
	}
	u := "wss://" + strings.TrimPrefix(c.URL, "https://") + tok.URL
	ws, resp, err := d.Dial(u, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			return nil, fmt.Errorf("console: %w: %d %s", err, resp.StatusCode, b)
		}
		return nil, fmt.Errorf("console: %w", err)
	}
	ws.SetReadLimit(messages.ConsoleMaxFrame)
	return newSession(ws, keep, 0), nil
}

// lastGC is the live heap after the last collection a gctrace=1 log shows
// ("gc N @… A->B->C MB, …": C).
func lastGC(log string) string {
	b, err := os.ReadFile(log)
	if err != nil {
		return "?"
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if !strings.HasPrefix(l, "gc ") {
			continue
		}
		for _, f := range strings.Split(l, ",") {
			f = strings.TrimSpace(f)
			if strings.HasSuffix(f, " MB") && strings.Count(f, "->") == 2 {
				parts := strings.Split(strings.TrimSuffix(f, " MB"), "->")
				return strings.Fields(parts[0])[len(strings.Fields(parts[0]))-1] + "→" + parts[1] + "→" + parts[2] + " MB (gc " + strings.Fields(l)[1] + ")"
			}
		}
	}
	return "no gc yet"
}
