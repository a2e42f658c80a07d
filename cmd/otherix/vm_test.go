package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/otherix/otherix/messages"
)

func TestParseNetwork(t *testing.T) {
	tests := []struct {
		in      string
		want    messages.NICSpec
		wantErr string
	}{
		{in: "backend", want: messages.NICSpec{Network: "backend"}},
		{in: "backend:10.0.0.5", want: messages.NICSpec{Network: "backend", IP: "10.0.0.5"}},
		{in: "", wantErr: "want NAME or NAME:IP"},
		{in: ":10.0.0.5", wantErr: "want NAME or NAME:IP"},
		{in: "backend:", wantErr: "is not an IPv4 address"},
		{in: "backend:10.0.0", wantErr: "is not an IPv4 address"},
		{in: "backend:fd00::1", wantErr: "is not an IPv4 address"},
		{in: "backend:10.0.0.5:1", wantErr: "is not an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseNetwork(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCreateRequestFromFlags(t *testing.T) {
	fl := vmCreateFlags{image: "https://img.example/d.qcow2", cpus: 2, userData: "-",
		networks: []string{"a", "b:192.168.1.9"}, stopped: true}
	req, err := fl.request("web-1", strings.NewReader("#cloud-config\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := req.Spec
	if req.Name != "web-1" || s.CPUs != 2 || s.MemoryMiB != 0 || s.PowerState != messages.PowerStopped ||
		s.UserData != "#cloud-config\n" || len(s.Networks) != 2 || s.Networks[1].IP != "192.168.1.9" {
		t.Fatalf("request = %+v", req)
	}
}

func TestCreateRequestPullPolicy(t *testing.T) {
	for _, p := range []string{"", messages.PullIfNotPresent, messages.PullAlways, messages.PullNever} {
		req, err := (&vmCreateFlags{image: "https://i.example/a.img", pullPolicy: p}).request("web-1", nil)
		if err != nil || req.Spec.Image.PullPolicy != p {
			t.Errorf("--pull-policy %q: %+v, %v", p, req.Spec.Image, err)
		}
	}
}

func TestCreateRequestChecksLocally(t *testing.T) {
	tests := []struct {
		name string
		fl   vmCreateFlags
		code string
	}{
		{"no image", vmCreateFlags{}, codeUsage},
		{"bad image", vmCreateFlags{image: "ftp://x/y"}, "invalid_field"},
		{"bad network", vmCreateFlags{image: "https://i.example/a", networks: []string{"n:x"}}, codeUsage},
		{"too many cpus", vmCreateFlags{image: "https://i.example/a", cpus: 100000}, "invalid_field"},
		{"bad pull policy", vmCreateFlags{image: "https://i.example/a", pullPolicy: "always"}, codeUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.fl.request("web-1", nil)
			if got := errorCode(err); got != tt.code {
				t.Fatalf("err = %v (code %q), want code %q", err, got, tt.code)
			}
		})
	}
	if _, err := (&vmCreateFlags{image: "https://i.example/a"}).request("Bad_Name", nil); errorCode(err) != "invalid_field" {
		t.Fatalf("bad name: err = %v", err)
	}
}

// TestVMOpsCommands checks what the power and log verbs send and print,
// against a server that records the requests.
func TestVMOpsCommands(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	task := `{"task":{"id":"t1","kind":"%s","state":"pending","target":{"kind":"vm","id":"v1","name":"web-1"},"owner":"u","progress":0,` +
		`"created_at":"2026-05-01T11:55:00Z","updated_at":"2026-05-01T11:55:00Z","revision":1}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		switch r.URL.Path {
		case "/v1/vms/web-1/logs":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			// A hostile guest: colours, a title and a clipboard write.
			_, _ = w.Write([]byte("\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x1b\\login: \x1b[0m\r\n"))
		case "/v1/vms/web-1/pause", "/v1/vms/web-1/resume":
			writeJSONAnswer(w, http.StatusOK, apiVM)
		case "/v1/vms/web-1/stop":
			writeJSONAnswer(w, http.StatusAccepted, fmt.Sprintf(task, "vm.stop"))
		case "/v1/vms/web-1/poweroff":
			writeJSONAnswer(w, http.StatusAccepted, fmt.Sprintf(task, "vm.poweroff"))
		case "/v1/vms/web-1/reboot":
			writeJSONAnswer(w, http.StatusAccepted, fmt.Sprintf(task, "vm.reboot"))
		default:
			writeJSONAnswer(w, http.StatusNotFound, `{"error":{"code":"route_not_found","message":"no route","details":{}}}`)
		}
	}))
	defer srv.Close()
	tests := []struct {
		args    []string
		request string
		stdout  string
	}{
		{[]string{"vm", "logs", "web-1", "--tail", "12"}, "GET /v1/vms/web-1/logs?tail=1048576", "login: \n"},
		{[]string{"vm", "logs", "web-1"}, "GET /v1/vms/web-1/logs", "login: \n"},
		{[]string{"vm", "logs", "web-1", "--raw"}, "GET /v1/vms/web-1/logs", "\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x1b\\login: \x1b[0m\r\n"},
		{[]string{"vm", "stop", "web-1", "--timeout", "2m"}, "POST /v1/vms/web-1/stop?timeout=2m0s", "vm.stop"},
		{[]string{"vm", "stop", "web-1"}, "POST /v1/vms/web-1/stop", "vm.stop"},
		{[]string{"vm", "poweroff", "web-1"}, "POST /v1/vms/web-1/poweroff", "vm.poweroff"},
		{[]string{"vm", "reboot", "web-1", "--force"}, "POST /v1/vms/web-1/reboot?force=true", "vm.reboot"},
		{[]string{"vm", "reboot", "web-1"}, "POST /v1/vms/web-1/reboot", "vm.reboot"},
		{[]string{"vm", "pause", "web-1"}, "POST /v1/vms/web-1/pause", "web-1   running"},
		{[]string{"vm", "resume", "web-1", "-o", "wide"}, "POST /v1/vms/web-1/resume", "PID"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			code, stdout, stderr := runCLI(t, srv.URL, tt.args...)
			mu.Lock()
			defer mu.Unlock()
			if code != 0 || len(seen) != 1 || seen[0] != tt.request || !strings.Contains(stdout, tt.stdout) {
				t.Fatalf("exit %d, requests %q, stdout %q, stderr %q; want %q and %q", code, seen, stdout, stderr, tt.request, tt.stdout)
			}
			if strings.HasPrefix(tt.request, "GET /v1/vms/web-1/logs") && stdout != tt.stdout {
				t.Fatalf("logs printed %q, want exactly %q", stdout, tt.stdout)
			}
		})
	}
	// The server's refusals exit 1 with their code.
	code, _, stderr := runCLI(t, srv.URL, "vm", "logs", "nope")
	if code != exitFailed || !strings.Contains(stderr, "[route_not_found]") {
		t.Fatalf("refused: exit %d %q", code, stderr)
	}
}

// TestVMVerbFlags: stop and reboot name the guest's grace period
// --grace-period (stop's old --timeout still works, deprecated), pause and
// resume take --wait like every other verb, and a typo suggests the verb.
func TestVMVerbFlags(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/pause"), strings.HasSuffix(r.URL.Path, "/resume"):
			writeJSONAnswer(w, 200, `{"id":"v1","name":"web-1","spec":{},"status":{"phase":"paused"}}`)
		default:
			writeJSONAnswer(w, 202, `{"task":{"id":"t1","kind":"vm.stop","state":"pending"}}`)
		}
	}))
	defer srv.Close()
	tests := []struct {
		args       []string
		want       string
		wantStderr string
	}{
		{[]string{"vm", "stop", "web-1", "--grace-period", "90s"}, "POST /v1/vms/web-1/stop?timeout=1m30s", ""},
		{[]string{"vm", "stop", "web-1", "--timeout", "90s"}, "POST /v1/vms/web-1/stop?timeout=1m30s", "--timeout of vm stop is deprecated: use --grace-period"},
		{[]string{"vm", "reboot", "web-1", "--grace-period", "30s"}, "POST /v1/vms/web-1/reboot?timeout=30s", ""},
		{[]string{"vm", "reboot", "web-1", "--force"}, "POST /v1/vms/web-1/reboot?force=true", ""},
		{[]string{"vm", "pause", "web-1", "--wait"}, "POST /v1/vms/web-1/pause", ""},
		{[]string{"vm", "resume", "web-1", "--wait"}, "POST /v1/vms/web-1/resume", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			code, _, stderr := runCLI(t, srv.URL, tt.args...)
			mu.Lock()
			defer mu.Unlock()
			if code != 0 || len(got) != 1 || got[0] != tt.want || !strings.Contains(stderr, tt.wantStderr) {
				t.Fatalf("exit %d, requests %q, stderr %q; want %q and %q", code, got, stderr, tt.want, tt.wantStderr)
			}
		})
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "lsit"}, `unknown command "lsit" for "otherix vm"; did you mean "otherix vm list"?`},
		{[]string{"vm", "stop", "web-1", "--grace-period", "2s", "--timeout", "3s"}, "give --grace-period only"},
		{[]string{"vm", "stop", "web-1", "--grace-period", "1.5s"}, "--grace-period must be a whole number of seconds from 1s to 1h"},
		{[]string{"vm", "reboot", "web-1", "--grace-period", "2h"}, "--grace-period must be a whole number of seconds from 1s to 1h"},
		{[]string{"vm", "reboot", "web-1", "--force", "--grace-period", "2s"}, "--force resets at once"},
	} {
		code, _, stderr := runCLI(t, srv.URL, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want usage error %q", tt.args, code, stderr, tt.want)
		}
	}
}
