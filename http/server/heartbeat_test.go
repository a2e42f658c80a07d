package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// enroller is what enrollNode needs of a control plane: the fake and the
// real gateway both are one.
type enroller interface {
	CreateJoinToken(ctx context.Context, p messages.Principal, req messages.CreateJoinTokenRequest) (*messages.CreatedJoinToken, error)
	Enroll(ctx context.Context, req messages.EnrollRequest, source string) (*messages.EnrollResponse, error)
	CAPEM() []byte
}

// enrollNode enrolls name with cp through a join token and a CSR, and
// returns the node's certificate and the pool holding the cluster CA.
func enrollNode(t *testing.T, cp enroller, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ctx := context.Background()
	tok, err := cp.CreateJoinToken(ctx, principalFor(security.RoleAdmin), messages.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csr, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cp.Enroll(ctx, messages.EnrollRequest{Token: tok.Token, Name: name,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(resp.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.CAPEM())
	return pair, roots
}

// enrolledClient enrolls name with the fake control plane and returns an
// HTTPS client presenting the node's certificate (or none, when bare).
func enrolledClient(t *testing.T, cp *fakeCP, name string, bare bool) *http.Client {
	t.Helper()
	pair, roots := enrollNode(t, cp, name)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if !bare {
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func postHeartbeat(t *testing.T, c *http.Client, srv *httptest.Server, body string) (int, map[string]any) {
	t.Helper()
	resp, err := c.Post(srv.URL+"/v1/heartbeat", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer %d is not JSON: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func heartbeatBody(t *testing.T, extra map[string]any) string {
	t.Helper()
	hb := messages.Heartbeat{AgentVersion: "0.2.0", Arch: "amd64",
		Capacity: messages.NodeCapacity{CPUs: 4, MemoryMiB: 8192, KVM: true, Accelerator: "kvm"}}
	raw, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	for k, v := range extra {
		m[k] = v
	}
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(m)
	return buf.String()
}

// TestHeartbeatStrictUpgrade: an agent newer than the control plane (an
// extra field) is refused with 400 unknown_field naming the field; the same
// agent without the field (after "upgrading" the control plane's contract, or
// downgrading the agent) is accepted. A heartbeat without a client
// certificate is refused before its body is read.
func TestHeartbeatStrictUpgrade(t *testing.T) {
	cp := newFakeCP()
	logs := &logBuffer{}
	srv := agentServer(t, cp, slog.New(slog.NewJSONHandler(logs, nil)))
	c := enrolledClient(t, cp, "n1", false)

	code, out := postHeartbeat(t, c, srv, heartbeatBody(t, map[string]any{"gpus": 2}))
	e, _ := out["error"].(map[string]any)
	details, _ := e["details"].(map[string]any)
	if code != http.StatusBadRequest || e["code"] != "unknown_field" || details["field"] != "gpus" {
		t.Fatalf("extra field: %d %v", code, out)
	}
	if n, _ := cp.GetNode(context.Background(), "n1"); n.Phase != messages.NodePending {
		t.Fatalf("refused heartbeat moved the node: %s", n.Phase)
	}
	if !strings.Contains(logs.String(), "heartbeat refused") || !strings.Contains(logs.String(), "node-n1") {
		t.Errorf("refusal not logged with the node:\n%s", logs)
	}

	code, out = postHeartbeat(t, c, srv, heartbeatBody(t, nil))
	if code != http.StatusOK || out["interval_seconds"] != float64(30) {
		t.Fatalf("upgraded agent: %d %v", code, out)
	}
	if n, _ := cp.GetNode(context.Background(), "n1"); n.Phase != messages.NodeReady || n.Status.Capacity.CPUs != 4 {
		t.Fatalf("node after heartbeat: %+v", n)
	}

	bare := enrolledClient(t, cp, "n2", true)
	code, out = postHeartbeat(t, bare, srv, heartbeatBody(t, nil))
	if e, _ := out["error"].(map[string]any); code != http.StatusUnauthorized || e["code"] != "client_certificate_required" {
		t.Fatalf("no client certificate: %d %v", code, out)
	}
}

// TestNodeAdminMatchesContract drives cordon, uncordon and delete with
// http/client and checks every answer against control-plane.yaml.
func TestNodeAdminMatchesContract(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, ct := newContractClient(t, ts.URL)
	c, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(security.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, name := range []string{"n1", "busy"} {
		tok, err := cp.CreateJoinToken(ctx, principalFor(security.RoleAdmin), messages.CreateJoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Enroll(ctx, enrollRequest(t, tok.Token, name), "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	// n1 is in the mesh: its tunnel IP and overlay are part of the contract.
	cp.fakeNodes.mu.Lock()
	n1 := *cp.fakeNodes.nodes["n1"]
	n1.TunnelIP = "10.240.0.1"
	n1.Status.Overlay = &messages.NodeOverlay{PublicKey: "k1", Endpoint: "192.0.2.1:51820", WireGuard: "kernel",
		Error: "vxlan: busy"}
	n1.Status.Message = "overlay: vxlan: busy"
	cp.fakeNodes.nodes["n1"] = &n1
	cp.fakeNodes.mu.Unlock()
	if n, err := c.CordonNode(ctx, "n1"); err != nil || !n.Cordoned || n.TunnelIP != "10.240.0.1" {
		t.Fatalf("cordon: %+v %v", n, err)
	}
	if n, err := c.UncordonNode(ctx, "n1"); err != nil || n.Cordoned {
		t.Fatalf("uncordon: %+v %v", n, err)
	}
	if _, err := c.CordonNode(ctx, "nope"); client.ErrorCode(err) != "not_found" {
		t.Fatalf("cordon unknown: %v", err)
	}
	if err := c.DeleteNode(ctx, "busy", false); client.ErrorCode(err) != "node_has_vms" {
		t.Fatalf("delete busy: %v", err)
	}
	if err := c.DeleteNode(ctx, "busy", true); err != nil {
		t.Fatalf("force delete: %v", err)
	}
	if err := c.DeleteNode(ctx, "n1", false); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteNode(ctx, "n1", false); client.ErrorCode(err) != "not_found" {
		t.Fatalf("delete twice: %v", err)
	}
	if len(ct.seen) < 6 {
		t.Errorf("only %d pairs checked: %v", len(ct.seen), ct.seen)
	}
}

// TestHeartbeatOverlayStrict: a heartbeat carrying the node's overlay is
// accepted and recorded; one whose overlay has a field this control plane
// does not know is refused like any other unknown field.
func TestHeartbeatOverlayStrict(t *testing.T) {
	cp := newFakeCP()
	srv := agentServer(t, cp, slog.New(slog.DiscardHandler))
	c := enrolledClient(t, cp, "n1", false)
	overlay := map[string]any{"public_key": "k1", "endpoint": "192.0.2.1:51820", "wireguard": "kernel", "reconciled": true}

	code, out := postHeartbeat(t, c, srv, heartbeatBody(t, map[string]any{"overlay": overlay}))
	if code != http.StatusOK {
		t.Fatalf("heartbeat with overlay: %d %v", code, out)
	}
	if n, _ := cp.GetNode(context.Background(), "n1"); n.Status.Overlay == nil || n.Status.Overlay.PublicKey != "k1" {
		t.Fatalf("overlay not recorded: %+v", n.Status)
	}
	overlay["private_key"] = "never sent"
	code, out = postHeartbeat(t, c, srv, heartbeatBody(t, map[string]any{"overlay": overlay}))
	e, _ := out["error"].(map[string]any)
	details, _ := e["details"].(map[string]any)
	if field, _ := details["field"].(string); code != http.StatusBadRequest || e["code"] != "unknown_field" || !strings.Contains(field, "private_key") {
		t.Fatalf("unknown overlay field: %d %v", code, out)
	}
}
