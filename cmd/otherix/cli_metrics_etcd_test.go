//go:build etcd

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

// runningAgent finishes every task at once with the VM running: the far
// side of the control plane's agent calls, which this test is not about.
type runningAgent struct{}

func (runningAgent) Submit(_ context.Context, _ agentclient.Node, req messages.AgentTaskRequest) (*messages.AgentTask, error) {
	now := time.Now().UTC()
	return &messages.AgentTask{ID: req.ID, Kind: req.Kind, VMID: req.VM.ID, State: messages.TaskSuccess, Progress: 100,
		VM:        &messages.VMObserved{ID: req.VM.ID, Phase: messages.PhaseRunning, ObservedGeneration: 1, Pid: 4242, StartedAt: &now, ObservedAt: now},
		CreatedAt: now, UpdatedAt: now, FinishedAt: &now}, nil
}

func (runningAgent) Task(context.Context, agentclient.Node, string, time.Duration) (*messages.AgentTask, error) {
	return nil, messages.NotFound("task", "x")
}

// TestCLIVMTopAndDescribeShowHeartbeatMetrics: the samples a node's
// heartbeat carries are what vm describe, vm top and node top print, over
// the real API and store.
func TestCLIVMTopAndDescribeShowHeartbeatMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	gw, err := gateway.Start(ctx, storetest.New(t), gateway.Config{Agent: runningAgent{},
		JobBackoffBase: 20 * time.Millisecond, JobBackoffMax: 50 * time.Millisecond, JobAttempts: 2,
		Nodes: gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	if _, _, err := gw.BootstrapAdmin(ctx, adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Config{}, gw, log).Handler())
	t.Cleanup(srv.Close)
	c := newCLI(t, srv.URL)

	tok, err := gw.CreateJoinToken(ctx, messages.Principal{UserID: "admin", Role: "admin"}, messages.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, der, err := security.NewNodeKeyAndCSR("hv1")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.Enroll(ctx, messages.EnrollRequest{Token: tok.Token, Name: "hv1",
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	hb := messages.Heartbeat{AgentVersion: "0.1.0", Arch: "amd64", Endpoint: "https://192.0.2.7:7444",
		Capacity: messages.NodeCapacity{CPUs: 4, MemoryMiB: 8192, Accelerator: "tcg"},
		Pools:    []messages.PoolStatus{{Name: "default", Path: "/var/lib/otherix/pools/default", TotalBytes: 100 << 30, FreeBytes: 50 << 30}}}
	if _, err := gw.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}
	c.ok("vm", "create", "web-1", "--image", "https://images.example.com/debian-12.qcow2", "--wait")
	c.ok("vm", "create", "db-1", "--image", "https://images.example.com/debian-12.qcow2", "--wait")
	ids := map[string]string{}
	for _, name := range []string{"web-1", "db-1"} {
		var vm messages.VM
		if err := json.Unmarshal([]byte(c.ok("vm", "get", name, "-o", "json")), &vm); err != nil {
			t.Fatal(err)
		}
		if vm.Status.Node != "hv1" || vm.Status.Phase != messages.PhaseRunning {
			t.Fatalf("%s is not running on hv1: %+v", name, vm.Status)
		}
		ids[name] = vm.ID
	}
	if out := c.ok("vm", "describe", "web-1"); !strings.Contains(out, "Metrics:  <none>") {
		t.Fatalf("describe before any sample:\n%s", out)
	}

	now := time.Now().UTC()
	hb.VMMetrics = []messages.VMMetrics{
		{ID: ids["db-1"], SampledAt: now, WindowSeconds: 10, VCPUs: 2, CPUSeconds: 321, CPUPercent: 150, RSSBytes: 1 << 30,
			Drives: []messages.DriveMetrics{{Device: "disk0", ReadBytes: 4 << 20, WriteBytes: 2 << 30, ReadOps: 10, WriteOps: 20000,
				WriteBytesPerSec: 3 << 20}}},
		{ID: ids["web-1"], SampledAt: now, WindowSeconds: 10, VCPUs: 1, CPUSeconds: 42.5, CPUPercent: 12.5, RSSBytes: 230 << 20,
			Drives: []messages.DriveMetrics{{Device: "disk0", ReadBytes: 512, ReadOps: 1}},
			NICs:   []messages.NICMetrics{{Device: "oxt0a1b2c3d", RXBytes: 2048, TXBytes: 1024, RXPackets: 3, TXPackets: 2, RXBytesPerSec: 1536}}},
	}
	if _, err := gw.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}

	out := c.ok("vm", "describe", "web-1")
	for _, want := range []string{"Metrics:", "12.5% of 1 vCPUs (42.5s of CPU time; rates over 10s)", "230MiB resident",
		"Drive disk0:", "read 512B (1 ops", "NIC oxt0a1b2c3d:", "rx 2KiB (3 packets, 1.5KiB/s)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("vm describe lacks %q:\n%s", want, out)
		}
	}

	out = c.ok("vm", "top")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^NAME\s+NODE\s+CPU\s+MEM\s+DISK\s+NET\s+AGE$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^db-1\s+hv1\s+150\.0%\s+1GiB\s+3MiB/s\s+0B/s\s+`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^web-1\s+hv1\s+12\.5%\s+230MiB\s+0B/s\s+1\.5KiB/s\s+`).MatchString(lines[2]) {
		t.Fatalf("vm top (busiest first):\n%s", out)
	}
	var top struct {
		Items []messages.VMMetricsView `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("vm", "top", "--limit", "1", "-o", "json")), &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Items) != 1 || top.Items[0].Name != "db-1" || top.Items[0].Metrics.CPUSeconds != 321 {
		t.Fatalf("vm top -o json --limit 1: %+v", top.Items)
	}
	if code, _, stderr := c.run("vm", "top", "--limit", "0"); code != 2 || !strings.Contains(stderr, "--limit must be from 1 to 200") {
		t.Fatalf("vm top --limit 0: exit %d, %s", code, stderr)
	}

	out = c.ok("node", "top")
	if !regexp.MustCompile(`(?m)^hv1\s+ready\s+2\s+162\.5%\s+40\.6%\s+1\.2GiB\s+3MiB/s\s+1\.5KiB/s\s+`).MatchString(out) {
		t.Fatalf("node top:\n%s", out)
	}
}
