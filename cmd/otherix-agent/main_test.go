package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// fakeEnrollServer answers GET /v1/ca and POST /v1/enroll like the API's
// agent-facing listener, signing with ca.
func fakeEnrollServer(t *testing.T, ca *security.CA) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(ca.CertPEM()) })
	mux.HandleFunc("POST /v1/enroll", func(w http.ResponseWriter, r *http.Request) {
		var req messages.EnrollRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		b, _ := pem.Decode([]byte(req.CSR))
		certPEM, fp, err := ca.SignNodeCSR(b.Bytes, req.Name, time.Now(), 0)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		_ = json.NewEncoder(w).Encode(messages.EnrollResponse{
			Node:        messages.Node{ID: "n-1", Name: req.Name, CertFingerprint: fp},
			Certificate: string(certPEM),
			CA:          string(ca.CertPEM()),
		})
	})
	srv := httptest.NewUnstartedServer(mux)
	cert, err := ca.IssueServerCert([]string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func run(args ...string) (string, error) {
	var out bytes.Buffer
	root := newRootCmd(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// enrollServerAndToken starts a fake enrollment server under a fresh CA
// and returns it with a join token pinned to that CA.
func enrollServerAndToken(t *testing.T) (*security.CA, *httptest.Server, string) {
	t.Helper()
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := fakeEnrollServer(t, ca)
	token, _, _, err := security.NewJoinToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	return ca, srv, token
}

func TestBootstrapCommand(t *testing.T) {
	ca, srv, token := enrollServerAndToken(t)
	dir := filepath.Join(t.TempDir(), "state")
	args := []string{"bootstrap", "--server", srv.URL, "--token", token, "--name", "hv1", "--state-dir", dir}

	out, err := run(args...)
	want := "enrolled node hv1 (id n-1, certificate node-hv1); CA fingerprint " + ca.Fingerprint() + "; state in " + dir + "\n"
	if err != nil || out != want {
		t.Fatalf("first run = %q, %v; want %q", out, err, want)
	}
	out, err = run(args...)
	if err != nil || out != "already "+want {
		t.Fatalf("second run = %q, %v; want %q", out, err, "already "+want)
	}
	out, err = run("bootstrap", "--server", srv.URL, "--token", token, "--name", "hv2", "--state-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "force") {
		t.Fatalf("other name = %q, %v; want a refusal mentioning force", out, err)
	}
}

// TestBootstrapRelativeStateDir: a relative --state-dir (make dev's default
// DEV_DIR is .dev) is made absolute at the edge, so nothing the agent keeps
// depends on the directory it was started from.
func TestBootstrapRelativeStateDir(t *testing.T) {
	_, srv, token := enrollServerAndToken(t)
	cwd := t.TempDir()
	t.Chdir(cwd)
	out, err := run("bootstrap", "--server", srv.URL, "--token", token, "--name", "hv1", "--state-dir", ".dev/agent")
	if err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(cwd, ".dev", "agent")
	if !strings.HasSuffix(out, "state in "+abs+"\n") {
		t.Fatalf("bootstrap = %q, want the state dir as %s", out, abs)
	}
}

func TestAbsDir(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	for in, want := range map[string]string{"": "", ".dev/agent": filepath.Join(cwd, ".dev/agent"), "/var/lib/x/": "/var/lib/x", "a/../b": filepath.Join(cwd, "b")} {
		got, err := absDir("--state-dir", in)
		if err != nil || got != want {
			t.Errorf("absDir(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestServeWithoutStateSaysNotEnrolled(t *testing.T) {
	_, err := run("serve", "--state-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not enrolled: run otherix-agent bootstrap") {
		t.Fatalf("serve err = %v, want a clear 'not enrolled' error", err)
	}
}

func TestServeAccelFlagAndEnv(t *testing.T) {
	if _, err := run("serve", "--state-dir", t.TempDir(), "--accel", "hvf"); err == nil || !strings.Contains(err.Error(), "--accel must be auto, kvm or tcg") {
		t.Fatalf("bad --accel: err = %v", err)
	}
	t.Setenv(envAccel, "bogus")
	if _, err := run("serve", "--state-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), envAccel+" must be auto, kvm or tcg") {
		t.Fatalf("bad %s: err = %v", envAccel, err)
	}
	// The flag wins over the environment.
	if _, err := run("serve", "--state-dir", t.TempDir(), "--accel", "tcg"); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("flag over env: err = %v", err)
	}
}

// TestServeRefusesRunDirTooLongForSockets: a state dir in a deep checkout
// (make dev's .dev) once failed only at the first create, in QEMU's spec check.
func TestServeRefusesRunDirTooLongForSockets(t *testing.T) {
	if err := checkRunDir("/var/lib/otherix-agent/run"); err != nil {
		t.Fatalf("default run dir: %v", err)
	}
	long := "/tmp/TestREADMEOfflineQuickStart1098231765/001/otherix/.dev/agent/run"
	err := checkRunDir(long)
	if err == nil || !strings.Contains(err.Error(), "--run-dir") || !strings.Contains(err.Error(), "unix sockets allow 107") {
		t.Fatalf("checkRunDir(%q) = %v, want a refusal naming --run-dir", long, err)
	}
	// The limit it names is exact: a dir of that length passes.
	if err := checkRunDir("/" + strings.Repeat("r", 107-1-1-vmIDLen-1-len("serial.sock"))); err != nil {
		t.Fatalf("run dir at the limit: %v", err)
	}
}
