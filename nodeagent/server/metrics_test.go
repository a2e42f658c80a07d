package server

import (
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

const testMetricsToken = "0123456789abcdef0123456789abcdef-metrics"

// startMetricsAPI serves NewHandler with the metrics endpoint over the
// agent's real TLS configuration; with a token, as serve does with
// --metrics-token-file.
func startMetricsAPI(t *testing.T, p pki, token string, vms []messages.VMMetrics) *httptest.Server {
	t.Helper()
	fake := &fakeBackend{tasks: map[string]*messages.AgentTask{}, consoles: map[string]*fakeConsole{}, t: t, dir: t.TempDir()}
	discard := slog.New(slog.DiscardHandler)
	srv := httptest.NewUnstartedServer(NewHandler(fake, discard,
		&Metrics{Source: func() []messages.VMMetrics { return vms }, Token: token}))
	srv.TLS = TLSConfig(func() *tls.Certificate { return &p.node }, p.ca.Pool(), discard)
	if token != "" {
		srv.TLS = AllowTokenClients(srv.TLS)
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func noCertClient(p pki) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: p.ca.Pool(), ServerName: "n1", MinVersion: tls.VersionTLS12}}}
}

func get(c *http.Client, url, bearer string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func sampleVMs() []messages.VMMetrics {
	balloon := int64(512 << 20)
	return []messages.VMMetrics{{ID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Name: "web-1", SampledAt: time.Now(), VCPUs: 2,
		CPUSeconds: 12.5, RSSBytes: 230 << 20, BalloonBytes: &balloon,
		Drives: []messages.DriveMetrics{{Device: "disk0", ReadBytes: 4096, WriteBytes: 8192, ReadOps: 1, WriteOps: 2}},
		NICs:   []messages.NICMetrics{{Device: "oxt0a1b2c3d", RXBytes: 100, TXBytes: 200, RXPackets: 3, TXPackets: 4}}}}
}

// TestMetricsEndpointAccess: /metrics answers the control plane's
// certificate, and with a token file also the token without a certificate;
// a client with neither, a wrong token, another CA's or a node's
// certificate is refused, and a token never opens any other route.
func TestMetricsEndpointAccess(t *testing.T) {
	p := newPKI(t)
	vms := sampleVMs()

	t.Run("certificate only", func(t *testing.T) {
		srv := startMetricsAPI(t, p, "", vms)
		code, body, err := get(clientWith(p, p.control), srv.URL+MetricsPath, "")
		if err != nil || code != 200 {
			t.Fatalf("control plane: %d %v", code, err)
		}
		checkExposition(t, body)
		// No token configured: a client without a certificate does not
		// even complete the handshake, whatever it sends.
		if _, _, err := get(noCertClient(p), srv.URL+MetricsPath, testMetricsToken); err == nil {
			t.Fatal("a client without a certificate got in")
		}
	})

	t.Run("token", func(t *testing.T) {
		srv := startMetricsAPI(t, p, testMetricsToken, vms)
		code, body, err := get(noCertClient(p), srv.URL+MetricsPath, testMetricsToken)
		if err != nil || code != 200 {
			t.Fatalf("with the token: %d %v %s", code, err, body)
		}
		checkExposition(t, body)
		if code, _, err := get(clientWith(p, p.control), srv.URL+MetricsPath, ""); err != nil || code != 200 {
			t.Fatalf("control plane: %d %v", code, err)
		}
		for name, bearer := range map[string]string{"no token": "", "a wrong token": strings.Repeat("x", len(testMetricsToken)),
			"a prefix of the token": testMetricsToken[:20]} {
			if code, body, err := get(noCertClient(p), srv.URL+MetricsPath, bearer); err != nil || code != 401 {
				t.Errorf("%s: %d %v %s, want 401", name, code, err, body)
			}
		}
		// The token opens /metrics only: tasks, VMs and consoles still
		// need the control plane's certificate.
		for _, path := range []string{"/healthz", "/v1/vms", "/v1/tasks/x", "/v1/vms/x/log"} {
			if code, _, err := get(noCertClient(p), srv.URL+path, testMetricsToken); err != nil || code != 401 {
				t.Errorf("GET %s with the metrics token: %d %v, want 401", path, code, err)
			}
		}
		// A client that presents a certificate of the cluster CA must
		// still be the control plane: a node's is refused at the
		// handshake, token or not.
		if _, _, err := get(clientWith(p, p.node), srv.URL+MetricsPath, testMetricsToken); err == nil {
			t.Error("a node certificate got in")
		}
		// Another CA's certificate is not even sent (the server asks for
		// the cluster CA's), so it counts for nothing: without the token,
		// refused.
		if code, _, err := get(clientWith(p, p.stranger), srv.URL+MetricsPath, ""); err == nil && code != 401 {
			t.Errorf("another CA's certificate without the token: %d, want 401 or a refused handshake", code)
		}
	})
}

// checkExposition: one series per VM and metric, labelled with the VM's
// id and name and, for devices, the agent's device names.
func checkExposition(t *testing.T, body string) {
	t.Helper()
	for _, want := range []string{
		`otherix_vm_cpu_seconds_total{vm_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",vm_name="web-1"} 12.5`,
		`otherix_vm_memory_rss_bytes{vm_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",vm_name="web-1"} 2.4117248e+08`,
		`otherix_vm_balloon_bytes{vm_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",vm_name="web-1"} 5.36870912e+08`,
		`otherix_vm_disk_write_bytes_total{device="disk0",vm_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",vm_name="web-1"} 8192`,
		`otherix_vm_network_receive_bytes_total{device="oxt0a1b2c3d",vm_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",vm_name="web-1"} 100`,
		`otherix_vm_vcpus{vm_id="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",vm_name="web-1"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %s\n%s", want, body)
		}
	}
}

func TestLoadMetricsToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if tok, err := LoadMetricsToken(write("good", testMetricsToken+"\n", 0o600)); err != nil || tok != testMetricsToken {
		t.Fatalf("good token: %q, %v", tok, err)
	}
	for name, c := range map[string]struct {
		body string
		mode os.FileMode
	}{
		"readable by others": {testMetricsToken, 0o644},
		"short":              {"abc", 0o600},
		"two words":          {testMetricsToken + " " + testMetricsToken, 0o600},
		"empty":              {"", 0o600},
	} {
		if _, err := LoadMetricsToken(write(strings.ReplaceAll(name, " ", "-"), c.body, c.mode)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := LoadMetricsToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}
