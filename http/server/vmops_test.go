package server

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestVMPowerTasks: poweroff, reboot and a stop with a timeout answer 202
// with the task of the right kind, carrying force and the timeout.
func TestVMPowerTasks(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	tests := []struct {
		path    string
		kind    string
		force   bool
		timeout int
	}{
		{"/v1/vms/web-1/poweroff", messages.TaskVMPoweroff, false, 0},
		{"/v1/vms/web-1/reboot", messages.TaskVMReboot, false, 0},
		{"/v1/vms/web-1/reboot?force=true", messages.TaskVMReboot, true, 0},
		{"/v1/vms/web-1/reboot?force=false", messages.TaskVMReboot, false, 0},
		{"/v1/vms/web-1/reboot?timeout=30s", messages.TaskVMReboot, false, 30},
		{"/v1/vms/web-1/stop", messages.TaskVMStop, false, 0},
		{"/v1/vms/web-1/stop?timeout=2m", messages.TaskVMStop, false, 120},
		{"/v1/vms/web-1/stop?timeout=1s", messages.TaskVMStop, false, 1},
		{"/v1/vms/web-1/stop?timeout=1h", messages.TaskVMStop, false, 3600},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := req{method: "POST", path: tt.path}.do(t, s)
			var body accepted
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 202 || body.Task == nil ||
				body.Task.Kind != tt.kind || rec.Header().Get("Location") != "/v1/tasks/"+body.Task.ID {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if cp.lastKind != tt.kind || cp.lastForc != tt.force || cp.lastTimeout != tt.timeout {
				t.Errorf("control plane got kind %s force %v timeout %d", cp.lastKind, cp.lastForc, cp.lastTimeout)
			}
		})
	}
	for _, bad := range []string{"0s", "500ms", "1.5s", "61m", "-1m", "soon", "2"} {
		wantError(t, req{method: "POST", path: "/v1/vms/web-1/stop?timeout=" + bad}.do(t, s), 400, "invalid_timeout")
		wantError(t, req{method: "POST", path: "/v1/vms/web-1/reboot?timeout=" + bad}.do(t, s), 400, "invalid_timeout")
	}
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/reboot?force=yes%3F"}.do(t, s), 400, "invalid_force")
}

// TestVMSyncOps: pause and resume answer 200 with the VM; logs answer raw
// text; the control plane's refusals keep their codes and statuses.
func TestVMSyncOps(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	rec := req{method: "POST", path: "/v1/vms/web-1/pause"}.do(t, s)
	var vm messages.VM
	if err := json.Unmarshal(rec.Body.Bytes(), &vm); err != nil || rec.Code != 200 || vm.Status.Phase != messages.PhasePaused || rec.Header().Get("ETag") == "" {
		t.Fatalf("pause: %d %s", rec.Code, rec.Body)
	}
	rec = req{method: "POST", path: "/v1/vms/web-1/resume"}.do(t, s)
	if err := json.Unmarshal(rec.Body.Bytes(), &vm); err != nil || rec.Code != 200 || vm.Status.Phase != messages.PhaseRunning {
		t.Fatalf("resume: %d %s", rec.Code, rec.Body)
	}

	rec = req{method: "GET", path: "/v1/vms/web-1/logs"}.do(t, s)
	if rec.Code != 200 || rec.Body.String() != fakeLog || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") || cp.lastTail != 0 {
		t.Fatalf("logs: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	rec = req{method: "GET", path: "/v1/vms/web-1/logs?tail=7"}.do(t, s)
	if rec.Code != 200 || rec.Body.String() != "login: " || cp.lastTail != 7 {
		t.Fatalf("logs tail: %d %q", rec.Code, rec.Body)
	}
	for _, bad := range []string{"0", "-1", "x", "1048577"} {
		wantError(t, req{method: "GET", path: "/v1/vms/web-1/logs?tail=" + bad}.do(t, s), 400, "invalid_tail")
	}

	cp.err = messages.Errorf(messages.KindConflict, "vm_not_running", "vm web-1 is stopped")
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/pause"}.do(t, s), 409, "vm_not_running")
	wantError(t, req{method: "GET", path: "/v1/vms/web-1/logs"}.do(t, s), 409, "vm_not_running")
	cp.err = messages.Errorf(messages.KindUnavailable, "node_unreachable", "node n1 cannot be reached now; retry later")
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/resume"}.do(t, s), 503, "node_unreachable")
	wantError(t, req{method: "GET", path: "/v1/vms/web-1/logs"}.do(t, s), 503, "node_unreachable")
	cp.err = messages.OutOfScope("vm", "web-1")
	wantError(t, req{method: "GET", path: "/v1/vms/web-1/logs"}.do(t, s), 404, "not_found")
}

// TestVMOpsPermissions: poweroff, reboot and pause need stop; resume needs
// start; logs need read, and a role without it is told the VM is not found.
func TestVMOpsPermissions(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	want := map[string]string{
		"POST /v1/vms/:id/poweroff": security.VerbStop,
		"POST /v1/vms/:id/reboot":   security.VerbStop,
		"POST /v1/vms/:id/pause":    security.VerbStop,
		"POST /v1/vms/:id/resume":   security.VerbStart,
		"GET /v1/vms/:id/logs":      security.VerbRead,
	}
	for key, verb := range want {
		r, ok := s.table[key]
		if !ok || r.access != accessRBAC || r.resource != security.ResourceVM || r.verb != verb {
			t.Errorf("%s: %+v, want vm/%s", key, r, verb)
		}
	}
	if !s.table["GET /v1/vms/:id/logs"].hideDenied {
		t.Error("logs must hide a denied VM as not found")
	}
	viewer := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleViewer)}
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/pause", header: viewer}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "POST", path: "/v1/vms/web-1/reboot", header: viewer}.do(t, s), 403, "forbidden")
	if rec := (req{method: "GET", path: "/v1/vms/web-1/logs", header: viewer}).do(t, s); rec.Code != 200 {
		t.Errorf("viewer logs of an own VM: %d %s", rec.Code, rec.Body)
	}
}

// TestVMOpsMatchContract drives every new VM endpoint through http/client
// and checks each answer, errors included, against control-plane.yaml.
func TestVMOpsMatchContract(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, ct := newContractClient(t, ts.URL)
	c, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(security.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for name, f := range map[string]func() (*client.Accepted, error){
		"poweroff":     func() (*client.Accepted, error) { return c.PoweroffVM(ctx, "web-1") },
		"reboot":       func() (*client.Accepted, error) { return c.RebootVM(ctx, "web-1", false) },
		"reboot force": func() (*client.Accepted, error) { return c.RebootVM(ctx, "web-1", true) },
	} {
		if a, err := f(); err != nil || a.Task == nil || a.Location == "" {
			t.Fatalf("%s: %+v %v", name, a, err)
		}
	}
	if a, err := c.StopVM(ctx, "web-1", client.WithStopTimeout(90*time.Second)); err != nil || a.Task == nil || cp.lastTimeout != 90 {
		t.Fatalf("stop with a timeout: %+v %v (timeout %d)", a, err, cp.lastTimeout)
	}
	if vm, err := c.PauseVM(ctx, "web-1"); err != nil || vm.Status.Phase != messages.PhasePaused || vm.Status.Pid == 0 {
		t.Fatalf("pause: %+v %v", vm, err)
	}
	if vm, err := c.ResumeVM(ctx, "web-1"); err != nil || vm.Status.Phase != messages.PhaseRunning {
		t.Fatalf("resume: %+v %v", vm, err)
	}
	if out, err := c.VMLogs(ctx, "web-1", 0); err != nil || string(out) != fakeLog {
		t.Fatalf("logs: %q %v", out, err)
	}
	if out, err := c.VMLogs(ctx, "web-1", 7); err != nil || string(out) != "login: " {
		t.Fatalf("logs tail: %q %v", out, err)
	}
	if _, err := c.StopVM(ctx, "web-1", client.WithStopTimeout(2*time.Hour)); client.ErrorCode(err) != "invalid_timeout" {
		t.Fatalf("stop 2h: %v", err)
	}
	cp.err = messages.Errorf(messages.KindConflict, "vm_not_running", "vm web-1 is stopped")
	if _, err := c.PauseVM(ctx, "web-1"); client.ErrorCode(err) != "vm_not_running" {
		t.Fatalf("pause stopped: %v", err)
	}
	if _, err := c.VMLogs(ctx, "web-1", 0); client.ErrorCode(err) != "vm_not_running" {
		t.Fatalf("logs unplaced: %v", err)
	}
	cp.err = messages.Errorf(messages.KindUnavailable, "node_unreachable", "node n1 cannot be reached now; retry later")
	if _, err := c.ResumeVM(ctx, "web-1"); client.ErrorCode(err) != "node_unreachable" {
		t.Fatalf("resume unreachable: %v", err)
	}
	if _, err := c.VMLogs(ctx, "web-1", 0); client.ErrorCode(err) != "node_unreachable" {
		t.Fatalf("logs unreachable: %v", err)
	}
	cp.err = messages.NotFound("vm", "nope")
	if _, err := c.RebootVM(ctx, "nope", true); client.ErrorCode(err) != "not_found" {
		t.Fatalf("reboot missing: %v", err)
	}
	cp.err = nil
	for _, want := range []string{
		"POST /v1/vms/{id}/poweroff 202", "POST /v1/vms/{id}/reboot 202", "POST /v1/vms/{id}/stop 202",
		"POST /v1/vms/{id}/pause 200", "POST /v1/vms/{id}/resume 200", "GET /v1/vms/{id}/logs 200",
		"POST /v1/vms/{id}/stop 400", "POST /v1/vms/{id}/pause 409", "GET /v1/vms/{id}/logs 409",
		"POST /v1/vms/{id}/resume 503", "GET /v1/vms/{id}/logs 503", "POST /v1/vms/{id}/reboot 404",
	} {
		if !ct.seen[want] {
			t.Errorf("%s was not checked against the contract (seen %v)", want, ct.seen)
		}
	}
}

// TestVMRefWithOwner: OWNER/NAME reaches the control plane whole, its slash
// escaped in the path as the SDK sends it.
func TestVMRefWithOwner(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	rec := req{method: "GET", path: "/v1/vms/dev%40example.com%2Fweb-1"}.do(t, s)
	var vm messages.VM
	if err := json.Unmarshal(rec.Body.Bytes(), &vm); err != nil || rec.Code != 200 || vm.Name != "dev@example.com/web-1" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
