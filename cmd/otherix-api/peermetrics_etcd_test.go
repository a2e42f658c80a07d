//go:build etcd

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestMetricsFromAnyReplica runs three replicas in this process. A node
// heartbeats the first with VM samples: the second and the third answer
// them in /v1/top/nodes, having asked the first over the agent listener
// with their peer certificates (no etcd write carries them). The node
// then fails over to the second with newer samples: every replica
// answers the newer ones, though the first still holds the older. The
// replicas' route refuses a node certificate and a client without one.
func TestMetricsFromAnyReplica(t *testing.T) {
	c := startThree(t)
	r1, r2, r3 := c.r[0], c.r[1], c.r[2]
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(c.dirs[0], "pki", "ca.pem"))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("cluster CA: %v", err)
	}
	nodeCert := enrollVia(t, r1, c.admin, roots, "n1")
	nodeClient := mtlsClient(roots, &nodeCert)
	vmID := messages.NewID()
	beat := func(r *apiRun, cpu float64) {
		t.Helper()
		hb := messages.Heartbeat{AgentVersion: "0.2.0", Arch: "amd64",
			Capacity: messages.NodeCapacity{CPUs: 4, MemoryMiB: 4096}, VMs: []messages.VMObserved{},
			VMMetrics: []messages.VMMetrics{{ID: vmID, SampledAt: time.Now().UTC(), VCPUs: 1, CPUPercent: cpu, RSSBytes: 64 << 20}}}
		b, _ := json.Marshal(hb)
		resp, err := nodeClient.Post("https://"+r.agent+"/v1/heartbeat", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("heartbeat: %d %s", resp.StatusCode, body)
		}
	}
	// topCPU is n1's CPU sum as replica r answers it, -1 without samples.
	topCPU := func(r *apiRun) float64 {
		t.Helper()
		status, code, body := r.call(t, "GET", "/v1/top/nodes", c.admin, nil)
		if status != http.StatusOK {
			t.Fatalf("top nodes on %s: %d %s %s", r.url, status, code, body)
		}
		var l struct{ Items []messages.NodeTop }
		_ = json.Unmarshal(body, &l)
		for _, n := range l.Items {
			if n.Name == "n1" && n.ReceivedAt != nil && n.VMs == 1 {
				return n.CPUPercent
			}
		}
		return -1
	}
	waitCPU := func(want float64, rs ...*apiRun) {
		t.Helper()
		for i, r := range rs {
			var got float64
			if !testutil.Until(30*time.Second, 50*time.Millisecond, func() bool { got = topCPU(r); return got == want }) {
				t.Fatalf("replica %d of %d: n1's CPU %v, want %v", i+1, len(rs), got, want)
			}
		}
	}
	beat(r1, 42)
	waitCPU(42, r1, r2, r3)

	// The agent moves to the second replica: its newer samples win
	// everywhere, the first's older ones included.
	beat(r2, 7)
	waitCPU(7, r3, r1, r2)

	// Only a replica may ask.
	get := func(cl *http.Client) (int, string) {
		t.Helper()
		resp, err := cl.Get("https://" + r1.agent + "/v1/cluster/node-metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env struct {
			Error   struct{ Code string }
			Replica string
			Items   []messages.HeldNodeMetrics
		}
		_ = json.NewDecoder(resp.Body).Decode(&env)
		if resp.StatusCode == http.StatusOK {
			return resp.StatusCode, fmt.Sprintf("%s:%d", env.Replica, len(env.Items))
		}
		return resp.StatusCode, env.Error.Code
	}
	if status, code := get(nodeClient); status != http.StatusForbidden || code != security.ReasonNotReplicaCert {
		t.Fatalf("a node certificate asked for node metrics: %d %s", status, code)
	}
	if status, code := get(mtlsClient(roots, nil)); status != http.StatusUnauthorized || code != "client_certificate_required" {
		t.Fatalf("no certificate asked for node metrics: %d %s", status, code)
	}
	peer, err := tls.LoadX509KeyPair(filepath.Join(c.dirs[1], "pki", peerCertFile), filepath.Join(c.dirs[1], "pki", peerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// r1 still holds its older samples of n1, and says so to a replica.
	if status, got := get(mtlsClient(roots, &peer)); status != http.StatusOK || got != "r1:1" {
		t.Fatalf("a replica asked r1 for node metrics: %d %s", status, got)
	}
}

// enrollVia enrolls a node named name through r's agent listener, with a
// join token an admin created, and returns its client certificate.
func enrollVia(t *testing.T, r *apiRun, admin string, roots *x509.CertPool, name string) tls.Certificate {
	t.Helper()
	status, code, body := r.call(t, "POST", "/v1/nodes/join-tokens", admin, map[string]string{})
	if status != http.StatusCreated {
		t.Fatalf("join token: %d %s %s", status, code, body)
	}
	var tok messages.CreatedJoinToken
	_ = json.Unmarshal(body, &tok)
	keyPEM, csr, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(messages.EnrollRequest{Token: tok.Token, Name: name, Arch: "amd64",
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	resp, err := mtlsClient(roots, nil).Post("https://"+r.agent+"/v1/enroll", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enroll: %d %s", resp.StatusCode, raw)
	}
	var er messages.EnrollResponse
	_ = json.Unmarshal(raw, &er)
	pair, err := tls.X509KeyPair([]byte(er.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// mtlsClient trusts roots and presents cert (none when nil).
func mtlsClient(roots *x509.CertPool, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}
