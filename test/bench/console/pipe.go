package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/otherix/otherix/http/agentclient"
	httpserver "github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/nodeagent/qemu"
	agentserver "github.com/otherix/otherix/nodeagent/server"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// The pipe harness: every component of a console session from the real
// packages, in this process, with two stand-ins:
//
//   - farEnd stands in for QEMU's serial chardev: a unix socket server that
//     echoes every byte back (the guest's tty echo) and, on demand, writes a
//     burst of output;
//   - controlPlane stands in for the gateway's token check and VM lookup
//     (etcd): AttachConsole dials the agent with the real agent client,
//     exactly as gateway.AttachConsole does after the token is consumed.
//
// Real: nodeagent/console (Dial, the hub, its sessions, the on-disk serial
// log), nodeagent/server's Handler and TLSConfig on a mutual-TLS listener
// with a node certificate of a fresh cluster CA, http/agentclient's Console
// dialer with the control plane's client certificate, and http/server's
// router, middleware and console proxy on a TLS listener.
type pipe struct {
	dir   string
	far   *farEnd
	log   *qemu.SerialLog
	hub   *console.Hub
	agent *http.Server
	api   *http.Server
	// agentURL is the agent's endpoint; apiAddr the API's host:port.
	agentURL string
	apiAddr  string
	ac       *agentclient.Client
	node     agentclient.Node
	dialer   *websocket.Dialer
	wg       sync.WaitGroup // the two Serve goroutines
}

const pipeVM = "vm-bench"

// farEnd is the serial chardev's far end: it accepts the hub's connection
// and echoes.
type farEnd struct {
	ln   net.Listener
	conn net.Conn
	wmu  sync.Mutex // echo and burst writes
	done chan struct{}
}

func newFarEnd(path string) (*farEnd, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	return &farEnd{ln: ln, done: make(chan struct{})}, nil
}

// serve accepts one connection and echoes it until it ends.
func (f *farEnd) serve() {
	defer close(f.done)
	c, err := f.ln.Accept()
	if err != nil {
		return
	}
	f.wmu.Lock()
	f.conn = c
	f.wmu.Unlock()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			f.wmu.Lock()
			_, werr := c.Write(buf[:n])
			f.wmu.Unlock()
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// burst writes n bytes of printable output, at most rate bytes a second
// (0: as fast as the hub reads them; QEMU does not wait for the hub either).
func (f *farEnd) burst(n int, rate float64) (time.Time, error) {
	chunk := make([]byte, 4<<10) // a UART-ish write size: QEMU writes what the guest's FIFO gives it
	for i := range chunk {
		chunk[i] = 'A' + byte(i%26)
	}
	t0 := time.Now()
	for sent := 0; sent < n; {
		m := min(len(chunk), n-sent)
		f.wmu.Lock()
		_, err := f.conn.Write(chunk[:m])
		f.wmu.Unlock()
		if err != nil {
			return t0, err
		}
		sent += m
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/rate*float64(time.Second)) - time.Since(t0); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	return t0, nil
}

func (f *farEnd) close() {
	f.ln.Close()
	f.wmu.Lock()
	if f.conn != nil {
		f.conn.Close()
	}
	f.wmu.Unlock()
	<-f.done
}

// backend is the agent's Backend for one running VM whose hub is h; only
// the calls a console makes are implemented.
type backend struct {
	agentserver.Backend
	hub *console.Hub
}

func (b *backend) VM(id string) (*messages.VMObserved, error) {
	if id != pipeVM {
		return nil, messages.Errorf(messages.KindNotFound, "vm_not_found", "no vm %s", id)
	}
	return &messages.VMObserved{ID: id, Phase: messages.PhaseRunning}, nil
}

func (b *backend) Console(id, mode string, force bool) (*console.Session, error) {
	return b.hub.Attach(mode, force)
}

// controlPlane stands in for the gateway: the "token" is the mode.
type controlPlane struct {
	httpserver.ControlPlane
	ac   *agentclient.Client
	node agentclient.Node
}

func (c *controlPlane) AttachConsole(ctx context.Context, ref, token string) (*websocket.Conn, *store.ConsoleTokenRecord, error) {
	conn, err := c.ac.Console(ctx, c.node, ref, token, false)
	if err != nil {
		return nil, nil, err
	}
	return conn, &store.ConsoleTokenRecord{User: "bench", Scope: "bench", VM: ref, Mode: token}, nil
}

func (c *controlPlane) Audit(messages.AuditEntry) {}

// AllowAnonymous admits every console attach: the bench measures the proxy,
// not the per-address limit in front of it.
func (c *controlPlane) AllowAnonymous(string) error { return nil }

// startPipe starts the harness in dir; opts are the hub's (the agent's
// defaults when zero).
func startPipe(dir string, opts console.Options) (*pipe, error) {
	p := &pipe{dir: dir}
	now := time.Now()
	ca, err := security.NewCA("bench", now)
	if err != nil {
		return nil, err
	}
	// The agent: a node certificate signed from a CSR, as enrolment does.
	keyPEM, csr, err := security.NewNodeKeyAndCSR("n1")
	if err != nil {
		return nil, err
	}
	certPEM, _, err := ca.SignNodeCSR(csr, "n1", now, 0)
	if err != nil {
		return nil, err
	}
	nodeCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	p.far, err = newFarEnd(filepath.Join(dir, "serial.sock"))
	if err != nil {
		return nil, err
	}
	go p.far.serve()
	p.log, err = qemu.OpenSerialLog(filepath.Join(dir, "serial.log"), 1<<20) // the agent's default bound
	if err != nil {
		return nil, err
	}
	p.hub, err = console.Dial(filepath.Join(dir, "serial.sock"), p.log, opts)
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.agent = &http.Server{Handler: agentserver.Handler(&backend{hub: p.hub}, quiet),
		TLSConfig:         agentserver.TLSConfig(func() *tls.Certificate { return &nodeCert }, ca.Pool(), quiet),
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	p.agentURL = "https://" + ln.Addr().String()
	p.wg.Add(1)
	go func() { defer p.wg.Done(); _ = p.agent.ServeTLS(ln, "", "") }()

	// The control plane: its client certificate, the agent client, the
	// REST API with its console proxy.
	clientCert, err := ca.IssueClientCert(security.ControlPlaneCN, now, 0)
	if err != nil {
		return nil, err
	}
	p.ac = agentclient.New(ca.Pool(), func() (*tls.Certificate, error) { return &clientCert, nil })
	p.node = agentclient.Node{Name: "n1", Endpoint: p.agentURL}
	srv := httpserver.New(httpserver.DefaultConfig(), &controlPlane{ac: p.ac, node: p.node}, quiet)
	apiCert, err := ca.IssueServerCert([]string{"127.0.0.1"}, now, 0)
	if err != nil {
		return nil, err
	}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.apiAddr = aln.Addr().String()
	p.api = &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute, TLSConfig: &tls.Config{Certificates: []tls.Certificate{apiCert}, MinVersion: tls.VersionTLS12},
		ErrorLog: slog.NewLogLogger(quiet.Handler(), slog.LevelWarn)}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); _ = p.api.ServeTLS(aln, "", "") }()
	p.dialer = &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
		HandshakeTimeout: 10 * time.Second, ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10}
	return p, nil
}

// open attaches a client through the API proxy.
func (p *pipe) open(mode string, keep bool, delay time.Duration) (*session, error) {
	u := "wss://" + p.apiAddr + "/v1/vms/" + pipeVM + "/console/ws?token=" + url.QueryEscape(mode)
	ws, resp, err := p.dialer.Dial(u, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			return nil, fmt.Errorf("dial %s: %w: %d %s", u, err, resp.StatusCode, b)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	ws.SetReadLimit(messages.ConsoleMaxFrame)
	return newSession(ws, keep, delay), nil
}

// openAgent attaches a client straight to the agent, as the control plane
// does (no proxy).
func (p *pipe) openAgent(mode string) (*session, error) {
	ws, err := p.ac.Console(context.Background(), p.node, pipeVM, mode, false)
	if err != nil {
		return nil, err
	}
	return newSession(ws, false, 0), nil
}

func (p *pipe) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.api.Shutdown(ctx)
	p.hub.Close(messages.ConsoleAgentGone, "benchmark over")
	_ = p.agent.Shutdown(ctx)
	p.wg.Wait()
	p.far.close()
	_ = p.log.Close()
	_ = os.RemoveAll(p.dir)
}
