package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// runCLI runs the CLI against server and returns its exit code and output.
func runCLI(t *testing.T, server string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	// A config of its own, so no test reads or writes ~/.otherix/config.
	cfg := filepath.Join(t.TempDir(), "config")
	code = runIO(context.Background(), append([]string{"--config", cfg, "--server", server}, args...), strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeJSONAnswer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-o", "xml", "vm", "list"}, `Error: unknown output format "xml"`},
		{[]string{"vm", "frobnicate"}, `Error: unknown command "frobnicate" for "otherix vm"`},
		{[]string{"bogus"}, `Error: unknown command "bogus" for "otherix"`},
		{[]string{"vm", "create", "web-1"}, "Error: --image is required [usage]"},
		{[]string{"vm", "get"}, "needs a VM name or id, got 0 argument(s) [usage]"},
		{[]string{"vm", "list", "--nope"}, "unknown flag: --nope [usage]"},
		{[]string{"create"}, "Error: -f FILE is required [usage]"},
		{[]string{"cluster", "join-token", "create"}, "--replica is required (node join tokens: otherix node join-token create) [usage]"},
		{[]string{"cluster", "join-token", "create", "--replica", "--ttl", "0s"}, "--ttl must be positive"},
		{[]string{"--timeout", "0s", "vm", "list"}, "--timeout must be positive"},
		{[]string{"vm", "create", "a", "--image", "https://i.example/a", "--wait", "--wait-timeout", "0s"}, "--wait-timeout must be positive"},
		{[]string{"vm", "create", "a", "--image", "https://i.example/a", "--memory", "lots"}, `--memory: "lots" is not a size`},
		{[]string{"vm", "create", "a", "--image", "https://i.example/a", "--disk", "1536Mi"}, `--disk: "1536Mi" is not a whole number of GiB`},
		{[]string{"vm", "create", "a", "--image", "https://i.example/a", "--arch", "riscv64"}, `--arch "riscv64": want amd64 or arm64`},
		{[]string{"vm", "create", "a", "--image", "https://i.example/a", "--cpus", "0x"}, `invalid argument "0x" for "--cpus"`},
		{[]string{"vm", "create", "a", "--image", "https://i.example/a", "--cpus", "999"}, "spec.cpus: must be between"},
		{[]string{"vm", "create", "a", "b", "--image", "https://i.example/a"}, "needs a VM name, got 2 argument(s)"},
		{[]string{"vm", "list", "extra"}, `unknown command "extra" for "otherix vm list"`},
		{[]string{"vm", "stop", "a", "--timeout", "90m"}, "--timeout must be a whole number of seconds from 1s to 1h"},
		{[]string{"vm", "stop", "a", "--timeout", "1.5s"}, "--timeout must be a whole number of seconds"},
		{[]string{"vm", "logs", "a", "--tail", "0"}, "--tail must be a positive number of lines"},
		{[]string{"vm", "reboot"}, "needs a VM name or id, got 0 argument(s)"},
		{[]string{"get"}, "a kind is required: one of vm, node, network, pool, volume, task"},
		{[]string{"get", "pods"}, `unknown kind "pods": want one of vm, node, network, pool, volume, task`},
		{[]string{"describe", "vm"}, "a vm name is required"},
		{[]string{"describe", "vm", "a", "-o", "json"}, "describe prints text only"},
		{[]string{"get", "vm", "a", "b"}, "want KIND NAME, got 3 arguments"},
		{[]string{"delete"}, "give -f FILE or KIND NAME"},
		{[]string{"delete", "task", "x"}, "tasks cannot be deleted"},
		{[]string{"delete", "vm", "a", "-f", "x.yaml"}, "give either -f FILE or KIND NAME, not both"},
		{[]string{"apply"}, "-f FILE is required"},
		{[]string{"apply", "x"}, `unknown command "x" for "otherix apply"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Nothing listens here: a usage error must come before any request.
			code, _, stderr := runCLI(t, "http://127.0.0.1:1", tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	// --client never contacts the server: nothing listens here.
	code, stdout, _ := runCLI(t, "http://127.0.0.1:1", "version", "--client")
	if code != 0 || !strings.HasPrefix(stdout, "otherix dev (") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("--client: exit %d, stdout %q", code, stdout)
	}
	// Unreachable server: the client line still prints, then the error.
	code, stdout, stderr := runCLI(t, "http://127.0.0.1:1", "version")
	if code != 1 || !strings.HasPrefix(stdout, "otherix dev (") || !strings.Contains(stderr, "[connection_failed]") {
		t.Fatalf("unreachable: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/version" {
			http.NotFound(w, r)
			return
		}
		writeJSONAnswer(w, http.StatusOK, `{"version":"1.4.0","commit":"c0ffee","build_time":"2026-12-07T10:00:00Z","go_version":"go1.26.8","etcd_version":"3.7.3","platform":"linux/arm64"}`)
	}))
	defer srv.Close()
	code, stdout, stderr = runCLI(t, srv.URL, "version")
	want := "otherix-api 1.4.0 (commit c0ffee, built 2026-12-07T10:00:00Z, go1.26.8, etcd 3.7.3, linux/arm64) at " + srv.URL + "\n"
	if code != 0 || !strings.HasPrefix(stdout, "otherix dev (") || !strings.HasSuffix(stdout, want) {
		t.Fatalf("server: exit %d, stdout %q, stderr %q; want the server line %q", code, stdout, stderr, want)
	}
	code, stdout, _ = runCLI(t, srv.URL, "-o", "json", "version")
	if code != 0 || !strings.Contains(stdout, `"server": {`) || !strings.Contains(stdout, `"etcd_version": "3.7.3"`) {
		t.Fatalf("-o json: exit %d, stdout %q", code, stdout)
	}
}

func TestAPIErrorShowsCodeAndRequestID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-42")
		writeJSONAnswer(w, http.StatusNotFound, `{"error":{"code":"not_found","message":"vm \"x\" not found","details":{}}}`)
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, srv.URL, "vm", "get", "x")
	if want := "Error: vm \"x\" not found [not_found] (request id req-42)\n"; code != 1 || stderr != want || stdout != "" {
		t.Fatalf("exit %d, stderr %q, stdout %q; want %q", code, stderr, stdout, want)
	}
}

func TestUnreachableAndTimeout(t *testing.T) {
	code, _, stderr := runCLI(t, "http://127.0.0.1:1", "vm", "list")
	if code != 1 || !strings.Contains(stderr, "[connection_failed]") {
		t.Fatalf("unreachable: exit %d, stderr %q", code, stderr)
	}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	code, _, stderr = runCLI(t, srv.URL, "--timeout", "50ms", "vm", "get", "x")
	if code != 1 || !strings.Contains(stderr, "within 50ms (raise --timeout) [timeout]") {
		t.Fatalf("timeout: exit %d, stderr %q", code, stderr)
	}
}

// TestWriteRetriesWithTheSameKey checks that a write the server is still
// busy with is retried under the Idempotency-Key it first carried.
func TestWriteRetriesWithTheSameKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		if n == 1 {
			writeJSONAnswer(w, http.StatusConflict, `{"error":{"code":"idempotency_in_progress","message":"busy"}}`)
			return
		}
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSONAnswer(w, http.StatusAccepted, `{"task":{"id":"t1","kind":"vm.create","state":"pending","target":{"kind":"vm","id":"v1","name":"web-1"}}}`)
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, srv.URL, "vm", "create", "web-1", "--image", "https://i.example/a.img")
	if code != 0 || !strings.Contains(stdout, "vm.create   pending   web-1") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	mu.Lock()
	first := keys
	mu.Unlock()
	if len(first) != 2 || first[0] != first[1] || !strings.HasPrefix(first[0], "otherix-cli-") {
		t.Fatalf("keys = %q, want the same generated key twice", first)
	}
	if !strings.Contains(stderr, "retrying (attempt 2 of 3)") || !strings.Contains(stderr, "already accepted") {
		t.Errorf("stderr = %q", stderr)
	}
	code, _, _ = runCLI(t, srv.URL, "vm", "create", "web-1", "--image", "https://i.example/a.img", "--idempotency-key", "mine")
	mu.Lock()
	defer mu.Unlock()
	if code != 0 || keys[len(keys)-1] != "mine" {
		t.Fatalf("exit %d, last key %q, want the given key", code, keys[len(keys)-1])
	}
}

func TestListFollowsCursor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") != "1" {
			t.Errorf("limit = %q, want 1", r.URL.Query().Get("limit"))
		}
		vm := func(name string) string {
			return `{"name":"` + name + `","spec":{"cpus":1,"memory_mib":512,"disk_gib":10,"power_state":"running"},"status":{"phase":"pending"}}`
		}
		switch r.URL.Query().Get("cursor") {
		case "":
			writeJSONAnswer(w, http.StatusOK, `{"items":[`+vm("a")+`],"next_cursor":"c2"}`)
		case "c2":
			writeJSONAnswer(w, http.StatusOK, `{"items":[`+vm("b")+`],"next_cursor":""}`)
		default:
			t.Errorf("cursor %q", r.URL.Query().Get("cursor"))
		}
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, srv.URL, "-o", "json", "vm", "list", "--limit", "1")
	var got struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); code != 0 || err != nil || len(got.Items) != 2 || got.Items[1].Name != "b" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestWaitReportsTheTaskError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			writeJSONAnswer(w, http.StatusAccepted, `{"task":{"id":"t1","kind":"vm.start","state":"pending","target":{"kind":"vm","id":"v1","name":"web-1"}}}`)
		case r.URL.Path == "/v1/tasks/t1":
			if r.URL.Query().Get("wait") == "" {
				t.Errorf("the wait is not a long poll: %s", r.URL)
			}
			writeJSONAnswer(w, http.StatusOK, `{"id":"t1","kind":"vm.start","state":"failed","target":{"kind":"vm","id":"v1","name":"web-1"},
				"error":{"code":"node_unreachable","message":"node n1 cannot be reached"}}`)
		}
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, srv.URL, "vm", "start", "web-1", "--wait")
	want := "Error: task t1 (vm.start web-1) failed: node n1 cannot be reached [node_unreachable]\n"
	if code != 1 || !strings.HasSuffix(stderr, want) || !strings.Contains(stdout, "t1") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want stderr ending %q", code, stdout, stderr, want)
	}
}

func TestWaitTimeoutSaysHowToFollow(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A long poll that runs out answers the current state.
		d, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		writeJSONAnswer(w, http.StatusOK, `{"id":"t1","kind":"vm.create","state":"running","progress":30,"target":{"kind":"vm","name":"web-1"}}`)
	}))
	defer srv.Close()
	code, stdout, stderr := runCLI(t, srv.URL, "task", "wait", "t1", "--timeout", "300ms")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "task t1 is still running after 300ms; follow it with: otherix task wait t1 [wait_timeout]") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "task t1 vm.create web-1: running 30%") {
		t.Errorf("progress not reported: %q", stderr)
	}
}
