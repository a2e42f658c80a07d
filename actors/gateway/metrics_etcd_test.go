//go:build etcd

package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// TestVMMetricsFromHeartbeats: the VM samples of a heartbeat reach the VM's
// metrics, the tops (scoped: another owner sees none) and the node's sum;
// the next heartbeat replaces them; and a heartbeat that changes only
// metrics writes nothing to etcd.
func TestVMMetricsFromHeartbeats(t *testing.T) {
	cfg := fastJobs()
	cfg.Agent = &opsAgent{}
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute}
	g, st := startGateway(t, cfg)
	ctx := t.Context()
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	_, cert := enrollNode(t, g, "n1")
	hb := observed(8)
	hb.Endpoint = "https://n1.example:7444"
	if _, err := g.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}
	vm, _ := createVM(t, g, "web")
	busy, _ := createVM(t, g, "busy")
	for _, id := range []string{vm.ID, busy.ID} {
		if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool {
			got, err := g.GetVM(ctx, owner, id)
			return err == nil && got.Status.Phase == messages.PhaseRunning && got.Status.Node == "n1" && got.Status.ActiveTask == ""
		}) {
			t.Fatalf("vm %s never ran on n1", id)
		}
	}
	// Before any sample: the VM answers without metrics.
	v, err := g.VMMetrics(ctx, owner, "web")
	if err != nil || v.Metrics != nil || v.Node != "n1" || v.Name != "web" {
		t.Fatalf("before a sample: %+v, %v", v, err)
	}

	sampledAt := time.Now().UTC()
	hb.VMMetrics = []messages.VMMetrics{
		{ID: busy.ID, SampledAt: sampledAt, VCPUs: 2, CPUSeconds: 90, CPUPercent: 180, RSSBytes: 300 << 20,
			Drives: []messages.DriveMetrics{{Device: "disk0", WriteBytes: 1 << 30, WriteBytesPerSec: 5 << 20}}},
		{ID: vm.ID, SampledAt: sampledAt, VCPUs: 1, CPUSeconds: 12.5, CPUPercent: 25, RSSBytes: 200 << 20,
			NICs: []messages.NICMetrics{{Device: "oxt0a1b2c3d", RXBytes: 100, RXBytesPerSec: 1 << 20}}},
		// A sample of a VM the control plane does not know is not shown.
		{ID: messages.NewID(), SampledAt: sampledAt, CPUPercent: 999},
	}
	hb.OmittedVMMetrics = 3
	before, err := st.Client().Get(ctx, "/otherix/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}
	after, err := st.Client().Get(ctx, "/otherix/")
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Fatalf("a heartbeat that changed only metrics wrote to etcd: revision %d → %d", before.Header.Revision, after.Header.Revision)
	}

	v, err = g.VMMetrics(ctx, owner, "web")
	if err != nil || v.Metrics == nil || v.Metrics.CPUSeconds != 12.5 || v.ReceivedAt == nil ||
		len(v.Metrics.NICs) != 1 || v.Metrics.NICs[0].RXBytesPerSec != 1<<20 {
		t.Fatalf("vm metrics: %+v, %v", v, err)
	}
	if _, err := g.VMMetrics(ctx, "mallory", "web"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("another owner's vm metrics: %v, want not found", err)
	}

	top, err := g.TopVMs(ctx, "", 0)
	if err != nil || len(top) != 2 || top[0].Name != "busy" || top[1].Name != "web" || top[0].Node != "n1" {
		t.Fatalf("top vms (any owner): %+v, %v", top, err)
	}
	if top, err := g.TopVMs(ctx, owner, 1); err != nil || len(top) != 1 || top[0].Name != "busy" {
		t.Fatalf("top vms (own, limit 1): %+v, %v", top, err)
	}
	if top, err := g.TopVMs(ctx, "mallory", 0); err != nil || len(top) != 0 {
		t.Fatalf("top vms of another owner: %+v, %v", top, err)
	}

	nodes, err := g.TopNodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("top nodes: %+v, %v", nodes, err)
	}
	n := nodes[0]
	if n.Name != "n1" || n.VMs != 3 || n.CPUPercent != 180+25+999 || n.RSSBytes != 500<<20 || n.CPUs != 8 ||
		n.DiskBytesPerSec != 5<<20 || n.NetBytesPerSec != 1<<20 || n.OmittedVMMetrics != 3 || n.ReceivedAt == nil {
		t.Fatalf("top nodes: %+v", n)
	}

	// The next heartbeat replaces the samples: a VM left out has none.
	hb.VMMetrics, hb.OmittedVMMetrics = hb.VMMetrics[:1], 0
	if _, err := g.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}
	if v, err := g.VMMetrics(ctx, owner, "web"); err != nil || v.Metrics != nil {
		t.Fatalf("a VM the last heartbeat did not sample: %+v, %v", v, err)
	}
}

// peerOf answers for the other replicas as the HTTP client does, from one
// other gateway in this process.
type peerOf struct{ g *gateway.Gateway }

func (p peerOf) HeldNodeMetrics(_ context.Context, node string) []messages.HeldNodeMetrics {
	return p.g.HeldNodeMetrics(node)
}

// TestVMMetricsFromPeerReplica: a node heartbeats one replica; another
// answers the VM's metrics and both tops from the samples the first holds
// (scoped as its own: another owner sees none), and neither shows samples
// three heartbeat intervals old.
func TestVMMetricsFromPeerReplica(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	nodes := gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now, Shared: true}
	cfg := fastJobs()
	cfg.Agent = &opsAgent{}
	cfg.Nodes = nodes
	g1, st := startGateway(t, cfg)
	ctx := t.Context()
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	cfg2 := fastJobs()
	cfg2.Replica, cfg2.CleanupInterval, cfg2.Nodes, cfg2.NoDispatch = "other", time.Hour, nodes, true
	cfg2.PeerMetrics = peerOf{g1}
	g2, err := gateway.Start(ctx, st, cfg2, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)

	_, cert := enrollNode(t, g1, "n1")
	hb := observed(8)
	hb.Endpoint = "https://n1.example:7444"
	if _, err := g1.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}
	vm, _ := createVM(t, g1, "web")
	if !testutil.Until(10*time.Second, 5*time.Millisecond, func() bool {
		got, err := g1.GetVM(ctx, owner, vm.ID)
		return err == nil && got.Status.Phase == messages.PhaseRunning && got.Status.Node == "n1" && got.Status.ActiveTask == ""
	}) {
		t.Fatal("the vm never ran on n1")
	}
	hb.VMMetrics = []messages.VMMetrics{{ID: vm.ID, SampledAt: clock.Now().UTC(), VCPUs: 1, CPUSeconds: 12.5, CPUPercent: 25, RSSBytes: 200 << 20}}
	if _, err := g1.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}

	v, err := g2.VMMetrics(ctx, owner, "web")
	if err != nil || v.Metrics == nil || v.Metrics.CPUSeconds != 12.5 || v.ReceivedAt == nil {
		t.Fatalf("vm metrics through the other replica: %+v, %v", v, err)
	}
	if _, err := g2.VMMetrics(ctx, "mallory", "web"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("another owner's vm metrics through the other replica: %v, want not found", err)
	}
	if top, err := g2.TopVMs(ctx, owner, 0); err != nil || len(top) != 1 || top[0].Name != "web" {
		t.Fatalf("own top vms through the other replica: %+v, %v", top, err)
	}
	if top, err := g2.TopVMs(ctx, "mallory", 0); err != nil || len(top) != 0 {
		t.Fatalf("another owner's top vms through the other replica: %+v, %v", top, err)
	}
	if top, err := g2.TopNodes(ctx); err != nil || len(top) != 1 || top[0].VMs != 1 || top[0].CPUPercent != 25 {
		t.Fatalf("top nodes through the other replica: %+v, %v", top, err)
	}

	clock.Add(3 * time.Minute)
	for name, g := range map[string]*gateway.Gateway{"the replica holding them": g1, "the other replica": g2} {
		if v, err := g.VMMetrics(ctx, owner, "web"); err != nil || v.Metrics != nil {
			t.Fatalf("%s shows samples three intervals old: %+v, %v", name, v, err)
		}
	}
}
