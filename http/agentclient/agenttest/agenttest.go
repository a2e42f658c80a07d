// Package agenttest is a fake agent API for tests of the control plane: an
// HTTPS server with a node certificate of a test CA that requires and
// verifies the control plane's client certificate, as the real agent does,
// and keeps tasks in memory, idempotent by id.
package agenttest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// PKI is a test cluster CA with the certificates tests need.
type PKI struct {
	CA *security.CA
}

// NewPKI makes a fresh CA.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return &PKI{CA: ca}
}

// NodeCert issues a node certificate for name, as enrollment would.
func (p *PKI) NodeCert(tb testing.TB, name string) tls.Certificate {
	tb.Helper()
	keyPEM, csr, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		tb.Fatal(err)
	}
	certPEM, _, err := p.CA.SignNodeCSR(csr, name, time.Now(), 0)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// ClientCert issues the control plane's client certificate.
func (p *PKI) ClientCert(tb testing.TB) tls.Certificate {
	tb.Helper()
	cert, err := p.CA.IssueClientCert(security.ControlPlaneCN, time.Now(), 0)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// Result is how the fake ends a task.
type Result struct {
	// Err fails the task with this error.
	Err *messages.TaskError
	// VM is the VM the task leaves (ID and ObservedAt are filled in).
	VM messages.VMObserved
	// After is how long the task runs (default 20ms).
	After time.Duration
}

// Agent is a running fake agent.
type Agent struct {
	Name string
	// URL is the agent's endpoint (https://127.0.0.1:port).
	URL string
	srv *httptest.Server

	mu sync.Mutex
	// behave decides each new task's result.
	behave  func(messages.AgentTaskRequest) Result
	tasks   map[string]*task
	submits map[string]int
	down    bool
	// con holds the console sessions (console.go), made on first use.
	con *consoleState
	// images is the fake's image cache (images.go).
	images []messages.NodeImage
}

type task struct {
	t    messages.AgentTask
	done chan struct{}
}

// Start runs a fake agent for node name with a certificate of p; behave
// decides each task's result (nil: every task succeeds with a VM in the
// phase its kind implies). It stops when the test ends.
func Start(tb testing.TB, p *PKI, name string, behave func(messages.AgentTaskRequest) Result) *Agent {
	return StartWithCert(tb, p, p.NodeCert(tb, name), name, behave)
}

// StartWithCert is Start with a given server certificate (tests of a
// certificate naming another node use it).
func StartWithCert(tb testing.TB, p *PKI, cert tls.Certificate, name string, behave func(messages.AgentTaskRequest) Result) *Agent {
	tb.Helper()
	if behave == nil {
		behave = Succeed
	}
	a := &Agent{Name: name, behave: behave, tasks: map[string]*task{}, submits: map[string]int{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CA.Pool(),
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || len(chains[0]) == 0 {
				return fmt.Errorf("no verified client certificate")
			}
			return security.VerifyControlPlaneCert(p.CA, chains[0][0], time.Now())
		},
	}
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	a.srv, a.URL = srv, srv.URL
	return a
}

// Succeed is the default behaviour: every task succeeds shortly.
func Succeed(req messages.AgentTaskRequest) Result {
	return Result{VM: VMAfter(req)}
}

// VMAfter is the VM a successful task of req's kind leaves.
func VMAfter(req messages.AgentTaskRequest) messages.VMObserved {
	vm := messages.VMObserved{ID: req.VM.ID, ObservedGeneration: req.VM.Generation}
	switch req.Kind {
	case messages.TaskVMCreate, messages.TaskVMStart, messages.TaskVMReboot:
		if req.Kind == messages.TaskVMCreate && req.VM.Spec.PowerState == messages.PowerStopped {
			vm.Phase = messages.PhaseStopped
			break
		}
		started := time.Now().UTC().Truncate(time.Second)
		vm.Phase, vm.Pid, vm.StartedAt = messages.PhaseRunning, 4242, &started
	case messages.TaskVMStop, messages.TaskVMPoweroff:
		vm.Phase = messages.PhaseStopped
	case messages.TaskVMDelete:
		vm.Phase = messages.PhaseDeleting
	}
	return vm
}

// SetDown makes the agent answer every request with 503 (true) or serve
// again (false).
func (a *Agent) SetDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = down
}

// Submits is how many times a task with this id was POSTed.
func (a *Agent) Submits(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.submits[id]
}

// Task is the fake's copy of a task, if it has one.
func (a *Agent) Task(id string) (messages.AgentTask, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.tasks[id]
	if !ok {
		return messages.AgentTask{}, false
	}
	return t.t, true
}

func (a *Agent) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	down := a.down
	a.mu.Unlock()
	if down {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the agent is shutting down")
		return
	}
	if a.serveImages(w, r) {
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/tasks":
		a.submit(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/tasks/"):
		a.get(w, r, strings.TrimPrefix(r.URL.Path, "/v1/tasks/"))
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/vms/") && strings.HasSuffix(r.URL.Path, "/console"):
		a.console(w, r, strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/vms/"), "/console"))
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/log"):
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("serial of " + strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/vms/"), "/log") + " tail=" + r.URL.Query().Get("tail")))
	case strings.HasPrefix(r.URL.Path, "/v1/vms/"):
		id := strings.TrimPrefix(r.URL.Path, "/v1/vms/")
		phase := messages.PhaseRunning
		if rest, ok := strings.CutSuffix(id, "/pause"); ok && r.Method == http.MethodPost {
			id, phase = rest, messages.PhasePaused
		} else if rest, ok := strings.CutSuffix(id, "/resume"); ok && r.Method == http.MethodPost {
			id = rest
		} else if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "no")
			return
		}
		if id == "missing" {
			writeError(w, http.StatusNotFound, "not_found", "vm \"missing\" not found")
			return
		}
		writeJSON(w, http.StatusOK, messages.VMObserved{ID: id, Phase: phase, Pid: 7, ObservedAt: time.Now().UTC()})
	default:
		writeError(w, http.StatusNotFound, "route_not_found", "no route")
	}
}

func (a *Agent) submit(w http.ResponseWriter, r *http.Request) {
	var req messages.AgentTaskRequest
	if err := apierror.DecodeStrict(r.Body, &req); err != nil || req.ID == "" {
		writeError(w, http.StatusBadRequest, "invalid_body", fmt.Sprintf("bad task request: %v", err))
		return
	}
	a.mu.Lock()
	a.submits[req.ID]++
	if t, ok := a.tasks[req.ID]; ok {
		body := t.t
		a.mu.Unlock()
		writeJSON(w, http.StatusOK, body)
		return
	}
	res := a.behave(req)
	now := time.Now().UTC()
	t := &task{t: messages.AgentTask{ID: req.ID, Kind: req.Kind, VMID: req.VM.ID, State: messages.TaskRunning,
		Progress: 10, Message: "working", CreatedAt: now, UpdatedAt: now}, done: make(chan struct{})}
	a.tasks[req.ID] = t
	body := t.t
	a.mu.Unlock()
	after := res.After
	if after <= 0 {
		after = 20 * time.Millisecond
	}
	time.AfterFunc(after, func() { a.finish(t, req, res) })
	writeJSON(w, http.StatusAccepted, body)
}

func (a *Agent) finish(t *task, req messages.AgentTaskRequest, res Result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now().UTC()
	t.t.UpdatedAt, t.t.FinishedAt, t.t.Progress = now, &now, 100
	if res.Err != nil {
		t.t.State, t.t.Error, t.t.Message = messages.TaskFailed, res.Err, res.Err.Message
	} else {
		vm := res.VM
		if vm.ID == "" {
			vm.ID = req.VM.ID
		}
		if vm.ObservedAt.IsZero() {
			vm.ObservedAt = now
		}
		t.t.State, t.t.VM, t.t.Message = messages.TaskSuccess, &vm, "done"
	}
	close(t.done)
}

func (a *Agent) get(w http.ResponseWriter, r *http.Request, id string) {
	a.mu.Lock()
	t, ok := a.tasks[id]
	a.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("task %q not found", id))
		return
	}
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > time.Minute {
			writeError(w, http.StatusBadRequest, "invalid_parameter", "wait: a duration up to 60s")
			return
		}
		timer := time.NewTimer(d)
		select {
		case <-t.done:
		case <-timer.C:
		case <-r.Context().Done():
		}
		timer.Stop()
	}
	a.mu.Lock()
	body := t.t
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apierror.NewBody(code, msg, nil))
}

// Close stops the fake now (it also stops when the test ends).
func (a *Agent) Close() { a.srv.Close() }
