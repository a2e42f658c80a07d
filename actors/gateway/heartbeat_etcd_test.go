//go:build etcd

package gateway_test

import (
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// startNodes runs a gateway whose node clock is clock, with seeded settings.
func startNodes(t *testing.T, clock *testutil.Clock) (*gateway.Gateway, *store.Store) {
	t.Helper()
	cfg := fastJobs()
	// The liveness loop's timer (every interval/2 of real time) stays out of
	// the way: the test runs passes itself, on the fake clock.
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now}
	g, st := startGateway(t, cfg)
	if _, err := st.SeedSettings(t.Context(), messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	return g, st
}

// enrollNode enrolls name and returns its node and certificate.
func enrollNode(t *testing.T, g *gateway.Gateway, name string) (messages.Node, *x509.Certificate) {
	t.Helper()
	tok := joinToken(t, g, messages.CreateJoinTokenRequest{})
	resp, err := enroll(g, t.Context(), tok, name, csrPEM(t, name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Node, cert
}

// rowVersion is how many times the node's row was written since creation.
func rowVersion(t *testing.T, st *store.Store, id string) int64 {
	t.Helper()
	resp, err := st.Client().Get(t.Context(), store.RowKey(store.Nodes, id))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("row of node %s: %v %d", id, err, len(resp.Kvs))
	}
	return resp.Kvs[0].Version
}

func observed(cpus int) messages.Heartbeat {
	return messages.Heartbeat{AgentVersion: "0.2.0", Arch: "amd64",
		Capacity:     messages.NodeCapacity{CPUs: cpus, MemoryMiB: 8192, KVM: true, Accelerator: "kvm"},
		QEMUVersions: []string{"8.2.2"},
		Pools:        []messages.PoolStatus{{Name: "default", Path: "/var/lib/otherix/pools/default", TotalBytes: 100 << 30, FreeBytes: 50 << 30}},
		VMs:          []messages.VMObserved{}}
}

func nodePhase(t *testing.T, g *gateway.Gateway, name string) *messages.Node {
	t.Helper()
	n, err := g.GetNode(t.Context(), name)
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

// TestHeartbeatWritesOnlyChanges: the first heartbeat makes the node ready in
// one write; identical heartbeats write nothing yet move the last heartbeat
// time the API shows; a changed capacity writes again.
func TestHeartbeatWritesOnlyChanges(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	n, cert := enrollNode(t, g, "n1")
	v0 := rowVersion(t, st, n.ID)

	resp, err := g.Heartbeat(ctx, cert, observed(4))
	if err != nil {
		t.Fatal(err)
	}
	if resp.IntervalSeconds != 60 || resp.Desired.Settings.DefaultPool == "" {
		t.Fatalf("heartbeat response %+v", resp)
	}
	if v := rowVersion(t, st, n.ID); v != v0+1 {
		t.Fatalf("first heartbeat: row version %d, want %d", v, v0+1)
	}
	got := nodePhase(t, g, "n1")
	if got.Phase != messages.NodeReady || got.AgentVersion != "0.2.0" || got.Status.Capacity == nil ||
		got.Status.Capacity.CPUs != 4 || got.Status.LastHeartbeatAt == nil || len(got.Status.Pools) != 1 {
		t.Fatalf("after first heartbeat: %+v", got)
	}
	for range 5 {
		clock.Add(30 * time.Second)
		if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
			t.Fatal(err)
		}
	}
	if v := rowVersion(t, st, n.ID); v != v0+1 {
		t.Fatalf("identical heartbeats wrote the row: version %d, want %d", v, v0+1)
	}
	got = nodePhase(t, g, "n1")
	if !got.Status.LastHeartbeatAt.Equal(clock.Now().UTC()) {
		t.Fatalf("last heartbeat %v, want %v", got.Status.LastHeartbeatAt, clock.Now())
	}
	nodes, _, err := g.ListNodes(ctx, store.Page{})
	if err != nil || len(nodes) != 1 || !nodes[0].Status.LastHeartbeatAt.Equal(clock.Now().UTC()) {
		t.Fatalf("list nodes: %+v %v", nodes, err)
	}
	if _, err := g.Heartbeat(ctx, cert, observed(8)); err != nil {
		t.Fatal(err)
	}
	if v := rowVersion(t, st, n.ID); v != v0+2 {
		t.Fatalf("changed capacity: row version %d, want %d", v, v0+2)
	}
	row, err := st.GetNode(ctx, n.ID)
	if err != nil || row.Status.Capacity == nil || row.Status.Capacity.CPUs != 8 {
		t.Fatalf("row after change: %+v %v", row, err)
	}
}

// TestLiveness: ready → unreachable after three missed intervals, → gone
// after the gone period, → ready when heartbeats return. A pending node is
// left alone.
func TestLiveness(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	n, cert := enrollNode(t, g, "n1")
	enrollNode(t, g, "idle")
	if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
		t.Fatal(err)
	}
	check := func(after time.Duration, want string) {
		t.Helper()
		clock.Add(after)
		if err := g.CheckNodesForTest(ctx); err != nil {
			t.Fatal(err)
		}
		if got := nodePhase(t, g, "n1"); got.Phase != want {
			t.Fatalf("after %v: phase %s, want %s", after, got.Phase, want)
		}
		if row, err := st.GetNode(ctx, n.ID); err != nil || row.Phase != want {
			t.Fatalf("row phase %v %v, want %s", row, err, want)
		}
	}
	check(2*time.Minute, messages.NodeReady)
	check(61*time.Second, messages.NodeUnreachable)
	check(5*time.Minute, messages.NodeUnreachable)
	check(3*time.Minute, messages.NodeGone)
	check(time.Hour, messages.NodeGone)
	if p := nodePhase(t, g, "idle").Phase; p != messages.NodePending {
		t.Fatalf("idle node: %s", p)
	}
	if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
		t.Fatal(err)
	}
	check(0, messages.NodeReady)
	if got := nodePhase(t, g, "n1"); got.Status.Message != "" {
		t.Fatalf("message kept after recovery: %q", got.Status.Message)
	}
}

// TestLivenessGraceAfterRestart: a new gateway does not know when a ready
// node last heartbeated and counts from its own start.
func TestLivenessGraceAfterRestart(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	_, cert := enrollNode(t, g, "n1")
	if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour) // the control plane was down for an hour
	cfg := fastJobs()
	cfg.Replica = "restarted"
	cfg.CleanupInterval = time.Hour
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now}
	g2, err := gateway.Start(ctx, st, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)
	clock.Add(2 * time.Minute)
	if err := g2.CheckNodesForTest(ctx); err != nil {
		t.Fatal(err)
	}
	if p := nodePhase(t, g2, "n1").Phase; p != messages.NodeReady {
		t.Fatalf("within the grace: %s", p)
	}
	clock.Add(61 * time.Second)
	if err := g2.CheckNodesForTest(ctx); err != nil {
		t.Fatal(err)
	}
	if p := nodePhase(t, g2, "n1").Phase; p != messages.NodeUnreachable {
		t.Fatalf("after the grace: %s", p)
	}
}

// TestHeartbeatRefusals: a certificate of an unknown node, one that is not
// the recorded one, one of another CA, and a deleted node's are refused.
func TestHeartbeatRefusals(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, _ := startNodes(t, clock)
	ctx := t.Context()
	_, cert := enrollNode(t, g, "n1")

	// A second certificate for n1 from the cluster CA, never recorded.
	_, der, err := security.NewNodeKeyAndCSR("n1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := g.CA().SignNodeCSR(der, "n1", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	unrecorded := parseCert(t, certPEM)
	// A certificate for n1 from another CA.
	other, err := security.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _, err := other.SignNodeCSR(der, "n1", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign := parseCert(t, otherPEM)
	ghostPEM, _, err := g.CA().SignNodeCSR(mustCSR(t, "ghost"), "ghost", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := g.CA().IssueClientCert(security.ControlPlaneCN, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cpLeaf, err := x509.ParseCertificate(cp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		code string
	}{
		{"unknown node", parseCert(t, ghostPEM), "unknown_node"},
		{"unrecorded certificate", unrecorded, "certificate_not_recorded"},
		{"another ca", foreign, "certificate_not_recorded"},
		{"not a node certificate", cpLeaf, "not_node_certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.Heartbeat(ctx, tc.cert, observed(1))
			e := wantCode(t, err, tc.code)
			if e.Kind != messages.KindUnauthenticated {
				t.Fatalf("kind %v", e.Kind)
			}
		})
	}
	if p := nodePhase(t, g, "n1").Phase; p != messages.NodePending {
		t.Fatalf("refused heartbeats moved the node: %s", p)
	}
	// Cordon, uncordon, delete: the deleted node's certificate is refused.
	if n, err := g.Cordon(ctx, "n1"); err != nil || !n.Cordoned {
		t.Fatalf("cordon: %+v %v", n, err)
	}
	if n := nodePhase(t, g, "n1"); !n.Cordoned {
		t.Fatal("cordon not kept")
	}
	if n, err := g.Uncordon(ctx, "n1"); err != nil || n.Cordoned {
		t.Fatalf("uncordon: %+v %v", n, err)
	}
	if _, err := g.Cordon(ctx, "nope"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("cordon unknown: %v", err)
	}
	if err := g.DeleteNode(ctx, "n1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := g.GetNode(ctx, "n1"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("deleted node: %v", err)
	}
	_, err = g.Heartbeat(ctx, cert, observed(1))
	wantCode(t, err, "unknown_node")
	if err := g.DeleteNode(ctx, "n1", false); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("delete twice: %v", err)
	}
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCSR(t *testing.T, name string) []byte {
	t.Helper()
	_, der, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestHeartbeatEndpoint: the agent's endpoint is kept on the node; one that
// is not an https URL refuses the heartbeat.
func TestHeartbeatEndpoint(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, _ := startNodes(t, clock)
	_, cert := enrollNode(t, g, "ep1")
	for _, bad := range []string{"http://10.0.0.1:7444", "10.0.0.1:7444", "https://", "https://u:p@h:1"} {
		hb := observed(2)
		hb.Endpoint = bad
		_, err := g.Heartbeat(t.Context(), cert, hb)
		if messages.KindOf(err) != messages.KindInvalid {
			t.Fatalf("endpoint %q: %v", bad, err)
		}
	}
	hb := observed(2)
	hb.Endpoint = "https://10.0.0.1:7444"
	if _, err := g.Heartbeat(t.Context(), cert, hb); err != nil {
		t.Fatal(err)
	}
	if n := nodePhase(t, g, "ep1"); n.Endpoint != hb.Endpoint || n.Phase != messages.NodeReady {
		t.Fatalf("node: %+v", n)
	}
}

// TestRenewNodeCert: a node renews over its current certificate; both
// certificates heartbeat until the new one is used, then only the new one.
// A CSR for another node and an unknown certificate are refused.
func TestRenewNodeCert(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, _ := startNodes(t, clock)
	ctx := t.Context()
	n, old := enrollNode(t, g, "n1")

	if _, err := g.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n2")}); err == nil {
		t.Fatal("a CSR naming another node was signed")
	} else {
		wantCode(t, err, "csr_policy")
	}
	if _, err := g.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: "not a csr"}); err == nil {
		t.Fatal("garbage was signed")
	}

	resp, err := g.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n1")})
	if err != nil {
		t.Fatal(err)
	}
	renewed := parseCert(t, []byte(resp.Certificate))
	if security.Fingerprint(renewed) == n.CertFingerprint || renewed.Subject.CommonName != "node-n1" {
		t.Fatalf("renewed certificate %s", renewed.Subject.CommonName)
	}
	row := nodePhase(t, g, "n1")
	if row.CertFingerprint != security.Fingerprint(renewed) || row.PrevCertFingerprint != n.CertFingerprint {
		t.Fatalf("recorded %s / prev %s", row.CertFingerprint, row.PrevCertFingerprint)
	}
	// The answer might have been lost: the old certificate still works.
	if _, err := g.Heartbeat(ctx, old, observed(1)); err != nil {
		t.Fatalf("old certificate before the new one is used: %v", err)
	}
	if _, err := g.Heartbeat(ctx, renewed, observed(1)); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
	if row := nodePhase(t, g, "n1"); row.PrevCertFingerprint != "" {
		t.Fatalf("prev fingerprint kept after the new one was used: %s", row.PrevCertFingerprint)
	}
	clock.Add(10 * time.Second) // past the verified-identity cache
	_, err = g.Heartbeat(ctx, old, observed(1))
	wantCode(t, err, "certificate_not_recorded")
	_, err = g.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n1")})
	wantCode(t, err, "certificate_not_recorded")
}

// fakeQuorum stands for the etcd member's view of its leader, which a
// single test member cannot lose on demand (the minority tests in
// cmd/otherix-api and test/e2e lose it for real).
type fakeQuorum struct {
	mu    sync.Mutex
	epoch uint64
	has   bool
}

func (f *fakeQuorum) QuorumEpoch() (uint64, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch, time.Time{}, f.has
}

func (f *fakeQuorum) set(has bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if has && !f.has {
		f.epoch++
	}
	f.has = has
}

// TestLivenessWithoutQuorum: while the replica has no quorum (it refuses
// heartbeats) the liveness loop judges nothing, however long the outage;
// once quorum is back, silences count from then, so a node the outage kept
// from heartbeating stays ready, and one that really went silent is
// demoted after the usual three intervals.
func TestLivenessWithoutQuorum(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	q := &fakeQuorum{}
	q.set(true)
	cfg := fastJobs()
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now}
	cfg.Quorum = q
	g, st := startGateway(t, cfg)
	ctx := t.Context()
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	_, cert := enrollNode(t, g, "n1")
	if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
		t.Fatal(err)
	}
	check := func(after time.Duration, want string) {
		t.Helper()
		clock.Add(after)
		if err := g.CheckNodesForTest(ctx); err != nil {
			t.Fatal(err)
		}
		if got := nodePhase(t, g, "n1"); got.Phase != want {
			t.Fatalf("after %v more: phase %s, want %s", after, got.Phase, want)
		}
	}
	check(time.Minute, messages.NodeReady)
	q.set(false)
	check(30*time.Minute, messages.NodeReady) // an outage longer than the gone period
	q.set(true)
	check(0, messages.NodeReady)
	check(2*time.Minute, messages.NodeReady)
	check(61*time.Second, messages.NodeUnreachable)

	// A short outage between two passes is caught by its epoch too.
	if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
		t.Fatal(err)
	}
	check(0, messages.NodeReady)
	clock.Add(150 * time.Second)
	q.set(false)
	q.set(true)
	check(time.Minute, messages.NodeReady)
}

// TestLivenessAcrossReplicas: an agent heartbeats one replica; another,
// which never hears it, runs the liveness loop. The heartbeats' time
// reaches the row often enough that the other replica never demotes the
// node while it heartbeats, and still demotes it once it stops.
func TestLivenessAcrossReplicas(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	const interval = time.Minute
	nodes := gateway.NodesConfig{HeartbeatInterval: interval, GoneAfter: 10 * time.Minute, Now: clock.Now, Shared: true}
	cfg := fastJobs()
	cfg.Nodes = nodes
	g1, st := startGateway(t, cfg)
	ctx := t.Context()
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	cfg2 := fastJobs()
	cfg2.Replica, cfg2.CleanupInterval, cfg2.Nodes = "other", time.Hour, nodes
	g2, err := gateway.Start(ctx, st, cfg2, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)
	n, cert := enrollNode(t, g1, "n1")
	for i := range 12 {
		// Agents add up to 10 % of jitter to the interval.
		clock.Add(interval + interval/10)
		if _, err := g1.Heartbeat(ctx, cert, observed(4)); err != nil {
			t.Fatal(err)
		}
		if err := g2.CheckNodesForTest(ctx); err != nil {
			t.Fatal(err)
		}
		if p := nodePhase(t, g2, "n1").Phase; p != messages.NodeReady {
			t.Fatalf("heartbeat %d to the first replica: the second sees the node %s", i, p)
		}
	}
	if row, err := st.GetNode(ctx, n.ID); err != nil || row.Phase != messages.NodeReady {
		t.Fatalf("row %+v %v; want ready", row, err)
	}
	clock.Add(3*interval + time.Second)
	if err := g2.CheckNodesForTest(ctx); err != nil {
		t.Fatal(err)
	}
	if p := nodePhase(t, g2, "n1").Phase; p != messages.NodeUnreachable {
		t.Fatalf("the agent stopped: the second replica sees the node %s, want unreachable", p)
	}
}

// TestLivenessGraceAfterPause: a replica whose process was stopped (its
// liveness passes stopped too) counts silences afresh when it runs again:
// agents that could reach only it were not heard meanwhile, through no
// fault of theirs. A node that stays silent is demoted three intervals on.
func TestLivenessGraceAfterPause(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, _ := startNodes(t, clock)
	g.SetLivenessWallClockForTest(clock.Now) // the process's time, stopped or not
	ctx := t.Context()
	_, cert := enrollNode(t, g, "n1")
	if _, err := g.Heartbeat(ctx, cert, observed(4)); err != nil {
		t.Fatal(err)
	}
	check := func(after time.Duration, want string) {
		t.Helper()
		clock.Add(after)
		if err := g.CheckNodesForTest(ctx); err != nil {
			t.Fatal(err)
		}
		if got := nodePhase(t, g, "n1"); got.Phase != want {
			t.Fatalf("after %v more: phase %s, want %s", after, got.Phase, want)
		}
	}
	check(30*time.Second, messages.NodeReady)
	check(5*time.Minute, messages.NodeReady) // the process was stopped for five minutes
	check(2*time.Minute, messages.NodeReady)
	check(61*time.Second, messages.NodeUnreachable)
}
