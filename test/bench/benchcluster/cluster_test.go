package benchcluster

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// TestDeadAgentFailsRequestAtOnce: an agent that exits while a request (a
// task's long poll) is in flight fails that request at once with the end of
// the agent's log, and the log is still there to read. Before, the request
// ran to its 90 s timeout and the benchmark then named a log it had
// deleted.
func TestDeadAgentFailsRequestAtOnce(t *testing.T) {
	dir := t.TempDir()
	// The API: a long poll that answers only when the client gives up.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer api.Close()
	c := newCluster("", dir, "")
	c.URL, c.HTTP = api.URL, api.Client()
	agent, err := StartProc(filepath.Join(dir, "agent.log"), os.Environ(), "sh", "-c",
		"echo 'otherix-agent: serve: --accel kvm: /dev/kvm: no such file or directory'; sleep 0.3; exit 1")
	if err != nil {
		t.Fatal(err)
	}
	c.Agent = agent
	c.watch(agent, "otherix-agent")

	t0 := time.Now()
	_, err = c.Call("GET", "/v1/tasks/t1?wait=30s", nil, nil)
	if took := time.Since(t0); took > 20*time.Second {
		t.Fatalf("the request took %s after the agent died", took)
	}
	if err == nil {
		t.Fatal("the request succeeded with the agent dead")
	}
	for _, want := range []string{"otherix-agent exited", "exit status 1", "/dev/kvm: no such file", filepath.Join(dir, "agent.log")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "agent.log")); err != nil {
		t.Errorf("the agent's log is gone: %v", err)
	}
	// Later calls fail at once too, without a request.
	if _, err := c.Call("GET", "/v1/nodes/n1", nil, nil); err == nil || !strings.Contains(err.Error(), "otherix-agent exited") {
		t.Errorf("a later call: %v", err)
	}
}

// TestStopIsNotADeath: the processes Stop ends are not reported as dying.
func TestStopIsNotADeath(t *testing.T) {
	dir := t.TempDir()
	c := newCluster("", dir, "")
	var err error
	if c.Agent, err = StartProc(filepath.Join(dir, "agent.log"), os.Environ(), "sleep", "60"); err != nil {
		t.Fatal(err)
	}
	if c.API, err = StartProc(filepath.Join(dir, "api.log"), os.Environ(), "sleep", "60"); err != nil {
		t.Fatal(err)
	}
	c.watch(c.Agent, "otherix-agent")
	c.watch(c.API, "otherix-api")
	c.Stop()
	// Give a wrongly reporting watcher the time to report.
	if testutil.Until(time.Second, 20*time.Millisecond, func() bool { return c.Err() != nil }) {
		t.Fatalf("Stop reported as a death: %v", c.Err())
	}
}

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		b.WriteString(strings.Repeat("x", i%3) + "line\n")
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(Tail(p, 40), "\n") + 1; got != 40 {
		t.Errorf("Tail gave %d lines, want 40", got)
	}
	if got := Tail(filepath.Join(t.TempDir(), "missing"), 5); !strings.Contains(got, "cannot read") {
		t.Errorf("Tail of a missing file: %q", got)
	}
}
