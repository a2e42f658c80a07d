package server

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/internal/requestid"
	"github.com/otherix/otherix/messages"
)

// lockedBuffer is a log sink the server's goroutines share with the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestIDReachesAgentLog: the id the control plane acts under
// travels with its call (agentclient) and is in the agent's log lines for
// it, so one id finds the request on both sides; an id that is not sane is
// not adopted.
func TestRequestIDReachesAgentLog(t *testing.T) {
	p := newPKI(t)
	var logs lockedBuffer
	fake := &fakeBackend{tasks: map[string]*messages.AgentTask{}, consoles: map[string]*fakeConsole{}, t: t, dir: t.TempDir()}
	srv := httptest.NewUnstartedServer(Handler(fake, slog.New(slog.NewJSONHandler(&logs, nil))))
	srv.TLS = TLSConfig(func() *tls.Certificate { return &p.node }, p.ca.Pool(), slog.New(slog.DiscardHandler))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	c := agentclient.New(p.ca.Pool(), func() (*tls.Certificate, error) { return &p.control, nil })
	n := agentclient.Node{Name: "n1", Endpoint: srv.URL}
	req := messages.AgentTaskRequest{ID: messages.NewID(), Kind: messages.TaskVMCreate, VM: messages.AgentVM{ID: messages.NewID(), Name: "web",
		Generation: 1, Spec: messages.VMSpec{CPUs: 1, MemoryMiB: 512, DiskGiB: 1, PowerState: messages.PowerRunning,
			Arch: messages.ArchAMD64, Image: messages.ImageSource{URL: "https://example.test/img.qcow2"}}}}
	if _, err := c.Submit(requestid.With(t.Context(), "task-0123"), n, req); err != nil {
		t.Fatal(err)
	}
	var accepted string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"task accepted"`) {
			accepted = line
		}
	}
	if !strings.Contains(accepted, `"request_id":"task-0123"`) {
		t.Fatalf("task accepted line %q lacks the request id; log:\n%s", accepted, logs.String())
	}

	req.ID = messages.NewID()
	if _, err := c.Submit(requestid.With(t.Context(), "bad id, forged"), n, req); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "forged") {
		t.Fatalf("an insane request id reached the log:\n%s", logs.String())
	}
}
