package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/otherix/otherix/api/openapi"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/security"
)

// fakeBackend stands in for the VM supervisor: these tests are about the
// API's transport, refusals and contract; nodeagent/vmactor's tests and the
// e2e suite drive the real supervisor.
type fakeBackend struct {
	mu       sync.Mutex
	tasks    map[string]*messages.AgentTask
	consoles map[string]*fakeConsole // started on first attach
	t        *testing.T
	dir      string // for the consoles' logs
}

// Test VM ids the fake knows as absent or not running.
const (
	unknownVM = "vm-nowhere"
	stoppedVM = "vm-stopped"
)

// fakeConsole is a real console hub over an in-memory pipe standing in for
// QEMU's serial socket, with "boot output" already in its log.
type fakeConsole struct {
	hub  *console.Hub
	qemu net.Conn // the test's end: what QEMU would read and write
}

func (f *fakeBackend) Submit(req messages.AgentTaskRequest) (*messages.AgentTask, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.tasks[req.ID]; ok {
		return t, false, nil
	}
	now := time.Now().UTC()
	t := &messages.AgentTask{ID: req.ID, Kind: req.Kind, VMID: req.VM.ID, State: messages.TaskPending, CreatedAt: now, UpdatedAt: now}
	f.tasks[req.ID] = t
	return t, true, nil
}

func (f *fakeBackend) Task(_ context.Context, id string, _ time.Duration) (*messages.AgentTask, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.tasks[id]; ok {
		return t, nil
	}
	return nil, messages.Errorf(messages.KindNotFound, "task_not_found", "no task %s", id)
}

func (f *fakeBackend) VMs() []messages.VMObserved { return nil }

func (f *fakeBackend) VM(id string) (*messages.VMObserved, error) {
	if id == unknownVM {
		return nil, messages.Errorf(messages.KindNotFound, "vm_not_found", "vm %s is not on this node", id)
	}
	if id == stoppedVM {
		return &messages.VMObserved{ID: id, Phase: messages.PhaseStopped, ObservedGeneration: 1, ObservedAt: time.Now().UTC()}, nil
	}
	return &messages.VMObserved{ID: id, Phase: messages.PhaseRunning, ObservedGeneration: 1, Pid: 42, ObservedAt: time.Now().UTC()}, nil
}

func (f *fakeBackend) Pause(_ context.Context, id string) (*messages.VMObserved, error) {
	return nil, messages.Errorf(messages.KindConflict, "vm_not_running", "vm %s is not running", id)
}

func (f *fakeBackend) Resume(_ context.Context, id string) (*messages.VMObserved, error) {
	return f.VM(id)
}

func (f *fakeBackend) Log(string, int64) ([]byte, error) { return []byte("boot\n"), nil }

func (f *fakeBackend) Console(id, mode string, force bool) (*console.Session, error) {
	if _, err := f.VM(id); err != nil {
		return nil, err
	}
	if id == stoppedVM {
		return nil, messages.Errorf(messages.KindConflict, "vm_not_running", "vm %s is not running", id)
	}
	c, err := f.console(id)
	if err != nil {
		return nil, err
	}
	s, err := c.hub.Attach(mode, force)
	if errors.Is(err, console.ErrBusy) {
		return nil, messages.Errorf(messages.KindConflict, "console_busy", "another interactive session is attached")
	}
	return s, err
}

// console returns id's fake console, starting it on first use.
func (f *fakeBackend) console(id string) (*fakeConsole, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.consoles[id]; ok {
		return c, nil
	}
	l, err := qemu.OpenSerialLog(filepath.Join(f.dir, id+".log"), 1<<20)
	if err != nil {
		return nil, err
	}
	if _, err := l.Write([]byte("boot output\n")); err != nil {
		return nil, err
	}
	hubEnd, qemuEnd := net.Pipe()
	c := &fakeConsole{hub: console.New(hubEnd, l, console.Options{}), qemu: qemuEnd}
	f.t.Cleanup(func() {
		c.hub.Close(messages.ConsoleAgentGone, "test over")
		qemuEnd.Close()
		l.Close()
	})
	f.consoles[id] = c
	return c, nil
}

type pki struct {
	ca       *security.CA
	node     tls.Certificate
	control  tls.Certificate
	stranger tls.Certificate // the control plane's CN, from another CA
}

func newPKI(t *testing.T) pki {
	t.Helper()
	now := time.Now()
	ca, err := security.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csr, err := security.NewNodeKeyAndCSR("n1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignNodeCSR(csr, "n1", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	node, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	control, err := ca.IssueClientCert(security.ControlPlaneCN, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := security.NewCA("other", now)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.IssueClientCert(security.ControlPlaneCN, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	return pki{ca: ca, node: node, control: control, stranger: stranger}
}

// startAgentAPI serves Handler over the agent's real TLS configuration,
// with n1's node certificate as the server certificate.
func startAgentAPI(t *testing.T, p pki) *httptest.Server {
	srv, _ := startAgentAPIWithFake(t, p)
	return srv
}

func startAgentAPIWithFake(t *testing.T, p pki) (*httptest.Server, *fakeBackend) {
	t.Helper()
	fake := &fakeBackend{tasks: map[string]*messages.AgentTask{}, consoles: map[string]*fakeConsole{}, t: t, dir: t.TempDir()}
	srv := httptest.NewUnstartedServer(Handler(fake, slog.New(slog.DiscardHandler)))
	srv.TLS = TLSConfig(func() *tls.Certificate { return &p.node }, p.ca.Pool(), slog.New(slog.DiscardHandler))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, fake
}

func clientWith(p pki, cert tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: p.ca.Pool(), ServerName: "n1", MinVersion: tls.VersionTLS12}}}
}

func TestOnlyTheControlPlaneGetsIn(t *testing.T) {
	p := newPKI(t)
	srv := startAgentAPI(t, p)
	if resp, err := clientWith(p, p.control).Get(srv.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("control plane: %v %v", resp, err)
	}
	for name, cert := range map[string]tls.Certificate{"a node certificate": p.node, "another CA": p.stranger} {
		if resp, err := clientWith(p, cert).Get(srv.URL + "/healthz"); err == nil {
			resp.Body.Close()
			t.Errorf("%s got in: %s", name, resp.Status)
		}
	}
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.ca.Pool(), ServerName: "n1"}}}
	if resp, err := noCert.Get(srv.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("a client without a certificate got in")
	}
}

// contractCheck validates every exchange against agent.yaml.
type contractCheck struct {
	t      *testing.T
	router routers.Router
	next   http.RoundTripper
}

func (c contractCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// A WebSocket: the body is the connection, not a document to
		// validate. The route must still be in the contract.
		if _, _, err := c.router.FindRoute(req); err != nil {
			c.t.Errorf("%s %s is not in agent.yaml: %v", req.Method, req.URL.Path, err)
		}
		return resp, nil
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := c.router.FindRoute(vreq)
	if err != nil {
		if resp.StatusCode != http.StatusNotFound {
			c.t.Errorf("%s %s is not in agent.yaml: %v", req.Method, req.URL.Path, err)
		}
		return resp, nil
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Body: io.NopCloser(bytes.NewReader(rb))}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		c.t.Errorf("%s %s → %d does not match agent.yaml: %v\n%s", req.Method, req.URL.Path, resp.StatusCode, err, rb)
	}
	return resp, nil
}

func TestAPIMatchesContract(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.Agent)
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	srv := startAgentAPI(t, p)
	c := clientWith(p, p.control)
	c.Transport = contractCheck{t: t, router: router, next: c.Transport}

	do := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &out)
		return resp.StatusCode, out
	}
	code := func(m map[string]any) string {
		e, _ := m["error"].(map[string]any)
		s, _ := e["code"].(string)
		return s
	}
	jobID, vmID := messages.NewID(), messages.NewID()
	task := `{"id":"` + jobID + `","kind":"vm.create","vm":{"id":"` + vmID + `","name":"web","generation":1,"spec":{"image":{"url":"http://127.0.0.1/x.qcow2"},"cpus":1,"memory_mib":256,"disk_gib":1,"power_state":"running"}}}`
	if st, _ := do("POST", "/v1/tasks", task); st != http.StatusAccepted {
		t.Fatalf("submit: %d", st)
	}
	if st, _ := do("POST", "/v1/tasks", task); st != http.StatusOK {
		t.Fatalf("resubmit: %d, want 200 for a known id", st)
	}
	if st, m := do("GET", "/v1/tasks/"+jobID+"?wait=1s", ""); st != 200 || m["id"] != jobID {
		t.Fatalf("get task: %d %v", st, m)
	}
	if st, m := do("GET", "/v1/tasks/"+messages.NewID(), ""); st != 404 || code(m) != "task_not_found" {
		t.Fatalf("unknown task: %d %v", st, m)
	}
	if st, m := do("POST", "/v1/tasks", strings.Replace(task, `"kind"`, `"colour":"red","kind"`, 1)); st != 400 || code(m) != "unknown_field" {
		t.Fatalf("unknown field: %d %v", st, m)
	}
	if st, m := do("POST", "/v1/tasks", strings.Replace(task, `"memory_mib":256`, `"memory_mib":1`, 1)); st != 400 || code(m) != "invalid_field" {
		t.Fatalf("invalid spec: %d %v", st, m)
	}
	if st, m := do("POST", "/v1/tasks", `{"id":"`+jobID+`","kind":"vm.create","vm":{"id":"`+vmID+`","name":"web","generation":1,"spec":{"user_data":"`+strings.Repeat("x", MaxBodyBytes)+`"}}}`); st != 413 || code(m) != "request_too_large" {
		t.Fatalf("huge body: %d %v", st, m)
	}
	if st, _ := do("GET", "/v1/vms", ""); st != 200 {
		t.Fatalf("list: %d", st)
	}
	if st, m := do("GET", "/v1/vms/"+vmID, ""); st != 200 || m["pid"] != float64(42) {
		t.Fatalf("get vm: %d %v", st, m)
	}
	if st, m := do("POST", "/v1/vms/"+vmID+"/pause", ""); st != 409 || code(m) != "vm_not_running" {
		t.Fatalf("pause: %d %v", st, m)
	}
	if st, _ := do("POST", "/v1/vms/"+vmID+"/resume", ""); st != 200 {
		t.Fatalf("resume: %d", st)
	}
	if st, m := do("GET", "/v1/vms/"+vmID+"/log?tail=0", ""); st != 400 {
		t.Fatalf("bad tail: %d %v", st, m)
	}
	if st, m := do("GET", "/v1/nope", ""); st != 404 || code(m) != "route_not_found" {
		t.Fatalf("unknown route: %d %v", st, m)
	}
	// The console route's refusals come before the upgrade, as envelopes.
	upgrade := func(path string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &out)
		return resp, out
	}
	if resp, m := upgrade("/v1/vms/" + unknownVM + "/console"); resp.StatusCode != 404 || code(m) != "vm_not_found" {
		t.Fatalf("console of unknown vm: %d %v", resp.StatusCode, m)
	}
	if resp, m := upgrade("/v1/vms/" + stoppedVM + "/console"); resp.StatusCode != 409 || code(m) != "vm_not_running" {
		t.Fatalf("console of stopped vm: %d %v", resp.StatusCode, m)
	}
	if resp, m := upgrade("/v1/vms/" + vmID + "/console?mode=admin"); resp.StatusCode != 400 || code(m) != "invalid_field" {
		t.Fatalf("console mode: %d %v", resp.StatusCode, m)
	}
	if st, m := do("GET", "/v1/vms/"+vmID+"/console", ""); st != 400 || code(m) != "websocket_required" {
		t.Fatalf("console without upgrade: %d %v", st, m)
	}
	ws, _ := upgrade("/v1/vms/" + vmID + "/console?mode=interactive")
	if ws.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("console upgrade: %s", ws.Status)
	}
	if resp, m := upgrade("/v1/vms/" + vmID + "/console?mode=interactive&force=false"); resp.StatusCode != 409 || code(m) != "console_busy" {
		t.Fatalf("second interactive console: %d %v", resp.StatusCode, m)
	}
	ws.Body.Close()

	resp, err := c.Get(srv.URL + "/v1/vms/" + vmID + "/log?tail=100")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "boot\n" {
		t.Fatalf("log: %d %q", resp.StatusCode, b)
	}
}

// The node certificate really is what SignNodeCSR issues (SAN = node name),
// so the control plane can verify the agent by name.
func TestServerCertificateNamesTheNode(t *testing.T) {
	p := newPKI(t)
	srv := startAgentAPI(t, p)
	c := clientWith(p, p.control)
	c.Transport.(*http.Transport).TLSClientConfig.ServerName = "n2"
	if resp, err := c.Get(srv.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client expecting node n2 accepted n1's certificate")
	}
}
