//go:build etcd

package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestE2EDryRun sends every write that takes ?dry_run=true through the
// real control plane, each answer checked against the contract: a dry run
// that would pass answers what it would do, one that would fail answers
// the write's own error (name and address conflicts, quota, a stale
// revision, a busy VM, a network in use, authorization), and the store's
// revision never moves.
func TestE2EDryRun(t *testing.T) {
	e := startEnvWith(t, identity.Config{AuditFlush: 10 * time.Millisecond})
	c := e.admin
	ctx := t.Context()
	if err := c.CheckDryRun(ctx); err != nil {
		t.Fatalf("the API does not announce dry runs: %v", err)
	}
	if _, err := c.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "net-a", CIDR: "10.5.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	req := vmRequest("web")
	req.Spec.Networks = []messages.NICSpec{{Network: "net-a", IP: "10.5.0.10"}}
	a, err := c.CreateVM(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	busy := vmRequest("busy")
	if _, err := c.CreateVM(ctx, busy); err != nil {
		t.Fatal(err)
	}
	// The create task stays pending (no node): cancelled, "web" is idle.
	if _, err := c.CancelTask(ctx, a.Task.ID); err != nil {
		t.Fatal(err)
	}
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	viewer := e.createUser("viewer@example.com", string(security.RoleViewer), "viewer-password-1")
	vc := e.login(viewer.Email, "viewer-password-1")
	// A denial is audited like any other (a write to the store), so it
	// goes before the revision is taken.
	_, err = vc.DryRunCreateVM(ctx, vmRequest("nope"))
	wantCode(t, err, http.StatusForbidden, "forbidden")

	web, err := c.GetVM(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	rev := e.revision()

	r, err := c.DryRunCreateVM(ctx, vmRequest("web2"))
	if err != nil || r.Action != messages.DryRunCreate || r.VM == nil || r.VM.Name != "web2" || r.VM.Owner != me.ID ||
		r.VM.Status.Phase != messages.PhasePending || r.VM.Status.ActiveTask != "" || r.VM.Spec.Arch == "" {
		t.Fatalf("dry-run create: %+v %v", r, err)
	}
	_, err = c.DryRunCreateVM(ctx, vmRequest("web"))
	wantCode(t, err, http.StatusConflict, "vm_name_conflict")
	taken := vmRequest("web3")
	taken.Spec.Networks = []messages.NICSpec{{Network: "net-a", IP: "10.5.0.10"}}
	_, err = c.DryRunCreateVM(ctx, taken)
	wantCode(t, err, http.StatusConflict, "ip_in_use")
	_, err = c.DryRunCreateVM(ctx, messages.CreateVMRequest{Name: "Bad_Name", Spec: vmRequest("x").Spec})
	wantCode(t, err, http.StatusBadRequest, "invalid_field")

	two := 2
	r, err = c.DryRunUpdateVM(ctx, "web", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &two}})
	if err != nil || r.Action != messages.DryRunUpdate || r.VM.Spec.CPUs != 2 || r.VM.Generation != web.Generation+1 {
		t.Fatalf("dry-run update: %+v %v", r, err)
	}
	_, err = c.DryRunUpdateVM(ctx, "web", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &two}, Revision: web.Revision - 1})
	wantCode(t, err, http.StatusConflict, "revision_conflict")

	r, err = c.DryRunDeleteVM(ctx, "web", false)
	if err != nil || r.Action != messages.DryRunDelete || r.VM.ID != web.ID {
		t.Fatalf("dry-run delete: %+v %v", r, err)
	}
	_, err = c.DryRunDeleteVM(ctx, "busy", false)
	wantCode(t, err, http.StatusConflict, "vm_busy")
	_, err = c.DryRunDeleteVM(ctx, "ghost", false)
	wantCode(t, err, http.StatusNotFound, "not_found")
	r, err = c.DryRunPowerVM(ctx, "web", messages.PowerRunning)
	if err != nil || r.Action != messages.DryRunStart || r.VM.Spec.PowerState != messages.PowerRunning {
		t.Fatalf("dry-run start: %+v %v", r, err)
	}

	r, err = c.DryRunCreateNetwork(ctx, messages.CreateNetworkRequest{Name: "net-b", CIDR: "10.6.0.0/24"})
	if err != nil || r.Action != messages.DryRunCreate || r.Network == nil || r.Network.Name != "net-b" || r.Network.VNI == 0 {
		t.Fatalf("dry-run network create: %+v %v", r, err)
	}
	_, err = c.DryRunCreateNetwork(ctx, messages.CreateNetworkRequest{Name: "net-c", CIDR: "10.5.0.0/25"})
	wantCode(t, err, http.StatusConflict, "network_overlap")
	egress := true
	r, err = c.DryRunUpdateNetwork(ctx, "net-a", client.UpdateNetworkRequest{Egress: &egress})
	if err != nil || r.Action != messages.DryRunUpdate || !r.Network.Egress {
		t.Fatalf("dry-run network update: %+v %v", r, err)
	}
	_, err = c.DryRunDeleteNetwork(ctx, "net-a")
	wantCode(t, err, http.StatusConflict, "network_in_use")

	// The quota is checked: the admin's own VMs already fill one of one.
	one := int64(2)
	if _, err := c.SetQuota(ctx, me.ID, messages.Quota{VMs: &one}); err != nil {
		t.Fatal(err)
	}
	// The quota write's audit entry is flushed in a later batch; the
	// revision is taken once it (and every entry before it) is stored.
	testutil.EventuallyReport(t, 30*time.Second, 20*time.Millisecond, "the quota write audited", func() (bool, string) {
		entries, _, err := c.ListAudit(ctx, client.ListOptions{Limit: 200})
		if err != nil {
			return false, err.Error()
		}
		for _, en := range entries {
			if strings.HasSuffix(en.Action, "/quota") && strings.HasPrefix(en.Action, "PUT ") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d entries", len(entries))
	})
	rev = e.revision()
	_, err = c.DryRunCreateVM(ctx, vmRequest("over"))
	wantCode(t, err, http.StatusUnprocessableEntity, "quota_exceeded")

	if after := e.revision(); after != rev {
		t.Fatalf("dry runs moved the store's revision %d -> %d", rev, after)
	}
	// Audit entries are written in batches: a real (refused) write after
	// the dry runs is audited after any of theirs would be, so once it is
	// listed, none of theirs may be.
	_, err = c.CreateVM(ctx, vmRequest("barrier"))
	wantCode(t, err, http.StatusUnprocessableEntity, "quota_exceeded")
	testutil.EventuallyReport(t, 30*time.Second, 20*time.Millisecond, "the barrier audited", func() (bool, string) {
		entries, _, err := c.ListAudit(ctx, client.ListOptions{Limit: 200})
		if err != nil {
			return false, err.Error()
		}
		barrier := false
		for _, en := range entries {
			switch en.Target {
			case "barrier":
				barrier = true
			case "web2", "over", "web3", "net-b", "net-c":
				t.Fatalf("a dry run was audited: %+v", en)
			}
		}
		return barrier, fmt.Sprintf("%d entries", len(entries))
	})
	for _, name := range []string{"web2", "over"} {
		if _, err := c.GetVM(ctx, name); client.ErrorCode(err) != "not_found" {
			t.Fatalf("%s exists after a dry run: %v", name, err)
		}
	}
	if n, err := c.GetNetwork(ctx, "net-a"); err != nil || n.Egress {
		t.Fatalf("net-a after a dry-run update: %+v %v", n, err)
	}
	if got, err := c.GetVM(ctx, "web"); err != nil || got.Spec.CPUs != 1 || got.Revision != web.Revision || got.Status.ActiveTask != "" {
		t.Fatalf("web after dry runs: %+v %v", got, err)
	}
}

// TestDryRunRefusedWhereUnsupported: a write that cannot honour dry_run
// refuses it instead of writing, and a value that is not a boolean is
// refused everywhere.
func TestDryRunRefusedWhereUnsupported(t *testing.T) {
	e := startEnv(t)
	if _, err := e.admin.CreateVM(t.Context(), vmRequest("web")); err != nil {
		t.Fatal(err)
	}
	token := e.loginPair(adminEmail, adminPassword).AccessToken
	for _, c := range []struct{ method, path, code string }{
		{"POST", "/v1/vms/web/poweroff?dry_run=true", "dry_run_unsupported"},
		{"POST", "/v1/vms?dry_run=maybe", "invalid_dry_run"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, e.url+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s: %d, want 400 %s", c.method, c.path, resp.StatusCode, c.code)
		}
	}
	if vm, err := e.admin.GetVM(t.Context(), "web"); err != nil || vm.Status.ActiveTask == "" {
		t.Fatalf("web: %+v %v", vm, err)
	}
}

// revision is the store's current revision.
func (e *apiEnv) revision() int64 {
	e.t.Helper()
	resp, err := e.st.Client().Get(e.t.Context(), "/otherix/schema")
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Header.Revision
}
