//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bootstrap runs the real otherix-agent bootstrap and returns its combined
// output and exit error.
func bootstrap(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return bootstrapFrom(t, binDir(t), args...)
}

// bootstrapFrom is bootstrap with the otherix-agent in bin.
func bootstrapFrom(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "otherix-agent"), append([]string{"bootstrap"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start otherix-agent: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("otherix-agent bootstrap hung:\n%s", out.String())
		return "", nil
	}
}

func createJoinToken(t *testing.T, base string, body map[string]string) string {
	t.Helper()
	var created struct {
		Token string `json:"token"`
	}
	if code := call(t, "POST", base+"/v1/nodes/join-tokens", body, &created); code != http.StatusCreated || created.Token == "" {
		t.Fatalf("create join token: status %d", code)
	}
	return created.Token
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestEnrollRealAgent enrolls the real otherix-agent with the real
// otherix-api over the agent-facing HTTPS listener.
func TestEnrollRealAgent(t *testing.T) {
	dataDir := t.TempDir()
	api := startAPI(t, dataDir)
	if m := fileMode(t, filepath.Join(dataDir, "pki", "ca-key.pem")); m != 0o600 {
		t.Errorf("ca-key.pem mode %o", m)
	}
	if m := fileMode(t, filepath.Join(dataDir, "pki", "ca.pem")); m != 0o644 {
		t.Errorf("ca.pem mode %o", m)
	}
	mustContain(t, api.stderr.String(), "agent listener on "+api.AgentURL)

	token := createJoinToken(t, api.URL, map[string]string{"ttl": "10m"})
	state := filepath.Join(t.TempDir(), "state")
	out, err := bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state)
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s\napi:\n%s", err, out, api.stderr.String())
	}
	if strings.Contains(out, token) {
		t.Errorf("bootstrap printed the token:\n%s", out)
	}
	for name, want := range map[string]os.FileMode{"node-key.pem": 0o600} {
		if m := fileMode(t, filepath.Join(state, name)); m != want {
			t.Errorf("%s mode %o, want %o", name, m, want)
		}
	}
	for _, name := range []string{"node.pem", "ca.pem", "agent.yaml"} {
		if _, err := os.Stat(filepath.Join(state, name)); err != nil {
			t.Errorf("state dir lacks %s: %v", name, err)
		}
	}
	certPEM, err := os.ReadFile(filepath.Join(state, "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("node.pem holds no PEM block")
	}
	sum := sha256.Sum256(block.Bytes)
	var node struct {
		Name            string `json:"name"`
		Phase           string `json:"phase"`
		CertFingerprint string `json:"cert_fingerprint"`
	}
	if code := call(t, "GET", api.URL+"/v1/nodes/n1", nil, &node); code != http.StatusOK {
		t.Fatalf("get node: status %d", code)
	}
	if node.Phase != "pending" || node.CertFingerprint != hex.EncodeToString(sum[:]) {
		t.Fatalf("node %+v, cert sha256 %x", node, sum)
	}

	// Idempotent: the same identity again contacts nothing.
	out, err = bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state)
	if err != nil {
		t.Fatalf("second bootstrap: %v\n%s", err, out)
	}
	mustContain(t, out, "already enrolled")

	// The token was consumed.
	out, err = bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n2", "--state-dir", t.TempDir())
	if err == nil {
		t.Fatalf("reused token enrolled n2:\n%s", out)
	}
	mustContain(t, out, "invalid_join_token")

	// A token pinning another CA: bootstrap refuses and names both.
	fresh := createJoinToken(t, api.URL, map[string]string{})
	head, real, _ := strings.Cut(fresh, "@")
	wrong := strings.Repeat("ab", 32)
	out, err = bootstrap(t, "--server", api.AgentURL, "--token", head+"@"+wrong, "--name", "n3", "--state-dir", t.TempDir())
	if err == nil {
		t.Fatalf("wrong pin enrolled n3:\n%s", out)
	}
	mustContain(t, out, real)
	mustContain(t, out, wrong)
	if code := call(t, "GET", api.URL+"/v1/nodes/n3", nil, nil); code != http.StatusNotFound {
		t.Errorf("n3: status %d", code)
	}
}
