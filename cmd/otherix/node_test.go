package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// fakeNodeAPI answers the node routes with canned data.
func fakeNodeAPI(t *testing.T, caPEM []byte) *httptest.Server {
	t.Helper()
	node := messages.Node{ID: "01jnode", Name: "hv1", Phase: messages.NodePending, Arch: "amd64", AgentVersion: "v0.3.0",
		CertFingerprint: strings.Repeat("ab", 32), EnrolledAt: now.Add(-2 * time.Hour), CertNotAfter: now.Add(90 * 24 * time.Hour)}
	view := messages.JoinTokenView{ID: "tok1", NodeName: "hv2", CreatedBy: "u1", CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)}
	mux := http.NewServeMux()
	js := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(caPEM)
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, _ *http.Request) {
		js(w, 200, map[string]any{"items": []messages.Node{node}})
	})
	mux.HandleFunc("GET /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "hv1" {
			js(w, 404, map[string]any{"error": map[string]any{"code": "not_found", "message": "node not found", "details": map[string]any{}}})
			return
		}
		js(w, 200, node)
	})
	mux.HandleFunc("POST /v1/nodes/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req messages.CreateJoinTokenRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.TTL != "30m0s" || req.NodeName != "hv2" {
			t.Errorf("create request %+v %v", req, err)
		}
		js(w, 201, messages.CreatedJoinToken{Token: "otxj_secret-token@fp", JoinToken: view})
	})
	mux.HandleFunc("GET /v1/nodes/join-tokens", func(w http.ResponseWriter, _ *http.Request) {
		js(w, 200, map[string]any{"items": []messages.JoinTokenView{view}})
	})
	mux.HandleFunc("DELETE /v1/nodes/join-tokens/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("POST /v1/nodes/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		n := node
		n.Cordoned = r.PathValue("action") == "cordon"
		js(w, 200, n)
	})
	mux.HandleFunc("DELETE /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("force") != "true" {
			js(w, 409, map[string]any{"error": map[string]any{"code": "node_has_vms", "message": "node hv1 has 1 vm(s) placed on it", "details": map[string]any{}}})
			return
		}
		w.WriteHeader(204)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func runNodeCLI(t *testing.T, srv *httptest.Server, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append([]string{"--server", srv.URL, "--config", t.TempDir() + "/config"}, args...)
	code := runIO(context.Background(), args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func TestNodeCommands(t *testing.T) {
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := fakeNodeAPI(t, ca.CertPEM())

	out, errs, code := runNodeCLI(t, srv, "node", "list")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "CORDONED") || !strings.Contains(out, "hv1") ||
		!strings.Contains(out, "pending") || !strings.Contains(out, "amd64") || !strings.Contains(out, "v0.3.0") {
		t.Fatalf("node list (%d): %s %s", code, out, errs)
	}
	out, _, code = runNodeCLI(t, srv, "node", "get", "hv1", "-o", "wide")
	if code != 0 || !strings.Contains(out, strings.Repeat("ab", 32)) || !strings.Contains(out, "01jnode") {
		t.Fatalf("node get wide (%d): %s", code, out)
	}
	out, _, code = runNodeCLI(t, srv, "node", "get", "hv1", "-o", "json")
	var n messages.Node
	if code != 0 || json.Unmarshal([]byte(out), &n) != nil || n.Name != "hv1" {
		t.Fatalf("node get json (%d): %s", code, out)
	}
	out, _, code = runNodeCLI(t, srv, "node", "list", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "- agent_version: v0.3.0") {
		t.Fatalf("node list yaml (%d): %s", code, out)
	}
	if _, errs, code = runNodeCLI(t, srv, "node", "get", "nope"); code == 0 || !strings.Contains(errs, "not found") {
		t.Fatalf("missing node (%d): %s", code, errs)
	}

	out, errs, code = runNodeCLI(t, srv, "node", "join-token", "create", "--ttl", "30m", "--name", "hv2")
	if code != 0 || !strings.Contains(out, "Token: otxj_secret-token@fp") ||
		!strings.Contains(out, "otherix-agent bootstrap --server https://<agent-listen> --token otxj_secret-token@fp --name hv2") ||
		!strings.Contains(errs, "only time") {
		t.Fatalf("join-token create (%d): %s %s", code, out, errs)
	}
	if strings.Count(out, "otxj_secret-token@fp") != 2 {
		t.Errorf("token printed %d times", strings.Count(out, "otxj_secret-token@fp"))
	}
	if _, _, code = runNodeCLI(t, srv, "node", "join-token", "create", "--ttl", "0s"); code == 0 {
		t.Errorf("zero ttl accepted")
	}
	out, _, code = runNodeCLI(t, srv, "node", "join-token", "list")
	if code != 0 || !strings.Contains(out, "tok1") || !strings.Contains(out, "hv2") {
		t.Fatalf("join-token list (%d): %s", code, out)
	}
	out, _, code = runNodeCLI(t, srv, "node", "join-token", "revoke", "tok1")
	if code != 0 || out != "join-token/tok1 revoked\n" {
		t.Fatalf("revoke (%d): %q", code, out)
	}

	out, errs, code = runNodeCLI(t, srv, "cluster", "info")
	if code != 0 || !strings.Contains(out, ca.Fingerprint()) || !strings.Contains(out, srv.URL) {
		t.Fatalf("cluster info (%d): %s %s", code, out, errs)
	}
	out, _, code = runNodeCLI(t, srv, "cluster", "info", "-o", "json")
	var info clusterInfo
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.CAFingerprint != ca.Fingerprint() {
		t.Fatalf("cluster info json (%d): %s", code, out)
	}
}

func TestNodeAdminCommands(t *testing.T) {
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := fakeNodeAPI(t, ca.CertPEM())
	if out, errs, code := runNodeCLI(t, srv, "node", "cordon", "hv1"); code != 0 || out != "node/hv1 cordoned\n" {
		t.Fatalf("cordon (%d): %q %s", code, out, errs)
	}
	if out, errs, code := runNodeCLI(t, srv, "node", "uncordon", "hv1"); code != 0 || out != "node/hv1 uncordoned\n" {
		t.Fatalf("uncordon (%d): %q %s", code, out, errs)
	}
	if _, errs, code := runNodeCLI(t, srv, "node", "delete", "hv1"); code == 0 || !strings.Contains(errs, "node_has_vms") && !strings.Contains(errs, "vm(s) placed") {
		t.Fatalf("delete without force (%d): %s", code, errs)
	}
	if out, errs, code := runNodeCLI(t, srv, "node", "delete", "hv1", "--force"); code != 0 || out != "node/hv1 deleted\n" {
		t.Fatalf("delete --force (%d): %q %s", code, out, errs)
	}
	out, errs, code := runNodeCLI(t, srv, "node", "describe", "hv1")
	if code != 0 || !strings.Contains(out, "Last heartbeat:") || !strings.Contains(out, "Capacity:") || !strings.Contains(out, "v0.3.0") {
		t.Fatalf("describe (%d): %s %s", code, out, errs)
	}
}

func TestDescribeNodeWithStatus(t *testing.T) {
	hb := now.Add(-10 * time.Second)
	n := &messages.Node{Name: "hv1", Phase: messages.NodeReady, Status: messages.NodeStatus{LastHeartbeatAt: &hb,
		Capacity:     &messages.NodeCapacity{CPUs: 8, MemoryMiB: 16384, KVM: false, KVMReason: "no /dev/kvm", Accelerator: "tcg"},
		QEMUVersions: []string{"8.2.2"}, Pools: []messages.PoolStatus{{Name: "default", Path: "/p", TotalBytes: 10 << 30, FreeBytes: 5 << 30}}}}
	var buf bytes.Buffer
	if err := describeNode(&buf, n, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10s ago", "CPUs:", "16GiB", "tcg", "no /dev/kvm", "8.2.2", "5.0GiB free of 10.0GiB"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("describe lacks %q:\n%s", want, buf.String())
		}
	}
	rows := nodeRows([]*messages.Node{n}, true, now)
	if got := strings.Join(rows[1], " "); !strings.Contains(got, "10s ago") || !strings.Contains(got, "tcg") {
		t.Errorf("wide row %q", got)
	}
}

func TestNewClusterInfoRejectsGarbage(t *testing.T) {
	if _, err := newClusterInfo("http://x", "", []byte("not pem")); err == nil {
		t.Fatal("garbage accepted")
	}
}
