package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestLoginURLHints: a URL without a scheme, and plain http:// to an HTTPS
// listener, are answered with the https:// URL to use.
func TestLoginURLHints(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, 200, `{}`)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, tt := range []struct {
		url  string
		want string
	}{
		{host, `did you mean https://` + host + `?`},
		{"127.0.0.1:7080", `did you mean https://127.0.0.1:7080?`},
		{"http://" + host, `answers HTTPS: use https://` + host},
	} {
		code, _, stderr := runCLI(t, "http://127.0.0.1:1", "login", tt.url, "--token", "otx_test")
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("login %s: exit %d, stderr %q; want %q", tt.url, code, stderr, tt.want)
		}
	}
}

// TestUnauthenticatedSaysLogInOnce: the API's 401 already says "log in
// again"; the CLI's hint must not repeat it.
func TestUnauthenticatedSaysLogInOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, 401, `{"error":{"code":"unauthenticated","message":"a valid bearer token is required; log in again"}}`)
	}))
	defer srv.Close()
	code, _, stderr := runCLI(t, srv.URL, "vm", "list")
	if code == 0 || strings.Count(stderr, "log in") != 1 || !strings.Contains(stderr, "otherix login "+srv.URL) {
		t.Fatalf("exit %d, stderr %q; want one 'log in' with the login command", code, stderr)
	}
}

// TestCreateExistingSaysAlreadyExists: re-running create -f on resources
// that exist reports already_exists naming each, whatever guard the API
// tripped first (an overlapping cidr, an address in use).
func TestCreateExistingSaysAlreadyExists(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/networks":
			writeJSONAnswer(w, 409, `{"error":{"code":"network_cidr_conflict","message":"the cidr overlaps network backend"}}`)
		case "POST /v1/vms":
			writeJSONAnswer(w, 409, `{"error":{"code":"address_in_use","message":"10.0.0.10 is in use"}}`)
		case "GET /v1/networks/backend":
			writeJSONAnswer(w, 200, `{"id":"n1","name":"backend","cidr":"10.0.0.0/24","type":"overlay"}`)
		case "GET /v1/vms/web-1":
			writeJSONAnswer(w, 200, `{"id":"v1","name":"web-1","spec":{},"status":{}}`)
		default:
			writeJSONAnswer(w, 404, `{"error":{"code":"not_found","message":"not found"}}`)
		}
	}))
	defer srv.Close()
	p := writeManifest(t, "kind: Network\nmetadata: {name: backend}\nspec: {cidr: 10.0.0.0/24}\n---\n"+
		"kind: VM\nmetadata: {name: web-1}\nspec: {image: {url: https://i.example/a.img}, networks: [{network: backend, ip: 10.0.0.10}]}\n---\n"+
		"kind: VM\nmetadata: {name: web-2}\nspec: {image: {url: https://i.example/a.img}, networks: [{network: backend, ip: 10.0.0.10}]}\n")
	code, _, stderr := runCLI(t, srv.URL, "create", "-f", p)
	for _, want := range []string{
		"network/backend: network/backend already exists",
		"vm/web-1: vm/web-1 already exists",
		"vm/web-2: 10.0.0.10 is in use [address_in_use]", // a real conflict keeps its code
		"3 of 3 resources failed [partial_failure]",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code == 0 {
		t.Fatal("exit 0")
	}
}

// applyFake is a VM API for apply tests: one VM, PATCH changes its spec,
// stop answers stopStatus.
type applyFake struct {
	mu         sync.Mutex
	vm         messages.VM
	patches    []string
	stopStatus int
}

func (f *applyFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/vms/web-1", "GET /v1/vms/v1":
		b, _ := json.Marshal(f.vm)
		writeJSONAnswer(w, 200, string(b))
	case "PATCH /v1/vms/v1":
		var req messages.UpdateVMRequest
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &req)
		f.patches = append(f.patches, string(body)+" if-match "+r.Header.Get("If-Match"))
		if req.Spec.MemoryMiB != nil {
			f.vm.Spec.MemoryMiB = *req.Spec.MemoryMiB
		}
		f.vm.Generation++
		f.vm.Revision++
		b, _ := json.Marshal(f.vm)
		writeJSONAnswer(w, 200, string(b))
	case "POST /v1/vms/v1/stop":
		if f.stopStatus != 0 {
			writeJSONAnswer(w, f.stopStatus, `{"error":{"code":"vm_busy","message":"vm web-1 is busy"}}`)
			return
		}
		writeJSONAnswer(w, 202, `{"task":{"id":"t1","kind":"vm.stop","state":"pending"}}`)
	default:
		writeJSONAnswer(w, 404, `{"error":{"code":"not_found","message":"not found"}}`)
	}
}

// TestApplyAllOrNothingAndRestartPending: a spec change whose power change
// is then refused is undone (apply never changes memory and then reports a
// failure); a change to a running VM says it waits for a restart, and so
// does vm describe.
func TestApplyAllOrNothingAndRestartPending(t *testing.T) {
	f := &applyFake{stopStatus: 409, vm: messages.VM{ID: "v1", Name: "web-1", Generation: 1, Revision: 7,
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://i.example/a.img"}, CPUs: 1, MemoryMiB: 512, DiskGiB: 10,
			PowerState: messages.PowerRunning},
		Status: messages.VMStatus{Phase: messages.PhaseRunning, ObservedGeneration: 1}}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	manifest := func(power string) string {
		return writeManifest(t, "kind: VM\nmetadata: {name: web-1}\nspec: {image: {url: https://i.example/a.img}, cpus: 1, memory_mib: 1024, disk_gib: 10, power_state: "+power+"}\n")
	}

	code, _, stderr := runCLI(t, srv.URL, "apply", "-f", manifest("stopped"))
	if code == 0 || !strings.Contains(stderr, "the spec change was undone, nothing was changed [vm_busy]") {
		t.Fatalf("exit %d, stderr %q; want the refusal saying the change was undone", code, stderr)
	}
	if f.vm.Spec.MemoryMiB != 512 || len(f.patches) != 2 || !strings.Contains(f.patches[1], `"memory_mib":512`) {
		t.Fatalf("memory %d after a failed apply; patches %q", f.vm.Spec.MemoryMiB, f.patches)
	}

	code, stdout, stderr := runCLI(t, srv.URL, "apply", "-f", manifest("running"))
	if code != 0 || !strings.Contains(stdout, "restart pending") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want configured with restart pending", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, srv.URL, "vm", "describe", "web-1")
	if code != 0 || !strings.Contains(stdout, "Restart pending:") {
		t.Fatalf("describe: exit %d:\n%s", code, stdout)
	}
	f.vm.Status.ObservedGeneration = f.vm.Generation // restarted
	if _, stdout, _ = runCLI(t, srv.URL, "vm", "describe", "web-1"); strings.Contains(stdout, "Restart pending") {
		t.Fatalf("describe after the restart still says restart pending:\n%s", stdout)
	}
}

// TestOwnerEmails: vm list -o wide and vm describe name owners by email:
// the caller's own from /v1/users/me, others' where the caller may read
// users, and the id where it may not.
func TestOwnerEmails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/users/me":
			writeJSONAnswer(w, 200, `{"id":"u-admin","email":"admin@example.com","role":"admin"}`)
		case "/v1/users/u-dev":
			writeJSONAnswer(w, 200, `{"id":"u-dev","email":"dev@example.com","role":"developer"}`)
		case "/v1/vms":
			writeJSONAnswer(w, 200, `{"items":[{"id":"v1","name":"web-1","owner":"u-admin","spec":{},"status":{}},`+
				`{"id":"v2","name":"web-1","owner":"u-dev","spec":{},"status":{}},{"id":"v3","name":"db","owner":"u-gone","spec":{},"status":{}}]}`)
		case "/v1/vms/dev@example.com/web-1":
			writeJSONAnswer(w, 200, `{"id":"v2","name":"web-1","owner":"u-dev","spec":{},"status":{}}`)
		default:
			writeJSONAnswer(w, 404, `{"error":{"code":"not_found","message":"not found"}}`)
		}
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, srv.URL, "vm", "list", "-o", "wide")
	if code != 0 || !strings.Contains(stdout, "admin@example.com") || !strings.Contains(stdout, "dev@example.com") || !strings.Contains(stdout, "u-gone") {
		t.Fatalf("exit %d, stderr %q, list:\n%s", code, stderr, stdout)
	}
	code, stdout, stderr = runCLI(t, srv.URL, "vm", "describe", "dev@example.com/web-1")
	if code != 0 || !strings.Contains(stdout, "dev@example.com (u-dev)") {
		t.Fatalf("exit %d, stderr %q, describe:\n%s", code, stderr, stdout)
	}
}
