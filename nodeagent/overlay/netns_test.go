//go:build netfabric

package overlay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/netfabric"

	"github.com/otherix/otherix/internal/netnstest"
)

// These tests run two Runners over real netfabric Fabrics in two "node"
// network namespaces joined by an underlay bridge in a third; all traffic
// stays in namespaces the test creates, and cleanup deletes them (every
// link in them goes too).

type testNode struct {
	ns     string
	fab    *netfabric.Fabric
	runner *Runner
	ip     netip.Addr
	tunnel string
}

func startNode(t *testing.T, ul, role string, ip netip.Addr, tunnel string, svc ...Services) *testNode {
	t.Helper()
	ns := netnstest.New(t, "oxo", role)
	netnstest.IP(t, "-n", ul, "link", "add", "u"+role, "type", "veth", "peer", "name", "eth0", "netns", ns)
	netnstest.IP(t, "-n", ul, "link", "set", "u"+role, "master", "br0", "up")
	netnstest.IP(t, "-n", ns, "addr", "add", ip.String()+"/24", "dev", "eth0")
	netnstest.IP(t, "-n", ns, "link", "set", "eth0", "up")
	fab, err := netfabric.New(netfabric.Options{Netns: filepath.Join("/var/run/netns", ns), WireGuard: netfabric.WireGuardUserspace,
		// The userspace UAPI socket directory is shared by all namespaces.
		WireGuardIf: fmt.Sprintf("oxw%d%s", os.Getpid()%100000, role), KeyDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{ns: ns, fab: fab, ip: ip, tunnel: tunnel}
	r, err := New(Config{Fabric: fab, UnderlayIP: ip, NICs: func() map[string][]messages.NICStatus { return nil },
		NetworkWait: 10 * time.Second})
	if len(svc) > 0 {
		r.cfg.Services = svc[0]
	}
	if err != nil {
		t.Fatal(err)
	}
	n.runner = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	// Registered after the namespace's cleanup, so it runs before it.
	t.Cleanup(func() {
		cancel()
		<-done
		if err := fab.Close(); err != nil {
			t.Errorf("close fabric: %v", err)
		}
	})
	return n
}

// endpoint puts a VM-like namespace on the bridge a tap of node n is
// attached to, with the VM's MAC and address and the anycast routes the
// guest's network-config sets.
func endpoint(t *testing.T, n *testNode, role, tap, mac, cidr string) string {
	t.Helper()
	var links []struct {
		Master string `json:"master"`
	}
	if err := json.Unmarshal([]byte(netnstest.IP(t, "-n", n.ns, "-j", "link", "show", "dev", tap)), &links); err != nil || len(links) != 1 || links[0].Master == "" {
		t.Fatalf("tap %s in %s: no bridge (%v %+v)", tap, n.ns, err, links)
	}
	br := links[0].Master
	ep := netnstest.New(t, "oxo", role)
	netnstest.IP(t, "-n", n.ns, "link", "add", "v"+role, "mtu", "1390", "type", "veth", "peer", "name", "eth0", "netns", ep)
	netnstest.IP(t, "-n", n.ns, "link", "set", "v"+role, "master", br, "up")
	netnstest.IP(t, "-n", ep, "link", "set", "eth0", "address", mac, "mtu", "1390", "up")
	netnstest.IP(t, "-n", ep, "addr", "add", cidr, "dev", "eth0")
	netnstest.IP(t, "-n", ep, "route", "add", "169.254.1.1", "dev", "eth0")
	netnstest.IP(t, "-n", ep, "route", "add", "default", "via", "169.254.1.1")
	return ep
}

func TestRunnersCarryPingAcrossNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox for ping")
	}
	ul := netnstest.New(t, "oxo", "ul")
	netnstest.IP(t, "-n", ul, "link", "add", "br0", "type", "bridge")
	netnstest.IP(t, "-n", ul, "link", "set", "br0", "up")
	a := startNode(t, ul, "a", netip.MustParseAddr("192.168.77.1"), "100.87.0.1")
	b := startNode(t, ul, "b", netip.MustParseAddr("192.168.77.2"), "100.87.0.2")

	const macA, macB = "52:54:00:0a:00:01", "52:54:00:0b:00:01"
	network := messages.DesiredNetwork{ID: "nw-test", Name: "test", CIDR: "10.10.0.0/24", Type: "overlay", VNI: 4321, MTU: 1390}
	peers := []messages.DesiredPeer{
		{Node: "a", PublicKey: a.fab.PublicKey(), Endpoint: "192.168.77.1:51820", TunnelIP: a.tunnel},
		{Node: "b", PublicKey: b.fab.PublicKey(), Endpoint: "192.168.77.2:51820", TunnelIP: b.tunnel},
	}
	for _, c := range []struct {
		n   *testNode
		fdb messages.DesiredFDBEntry
	}{
		{a, messages.DesiredFDBEntry{Network: network.ID, MAC: macB, Remote: b.tunnel}},
		{b, messages.DesiredFDBEntry{Network: network.ID, MAC: macA, Remote: a.tunnel}},
	} {
		c.n.runner.SetDesired(messages.DesiredState{Settings: messages.DefaultSettings(), Overlay: &messages.DesiredOverlay{
			TunnelIP: c.n.tunnel, ListenPort: 51820, Networks: []messages.DesiredNetwork{network}, Peers: peers,
			FDB: []messages.DesiredFDBEntry{c.fdb}}})
	}
	start := time.Now()
	tapA, err := a.runner.EnsureNICs(context.Background(), "vm-a", []messages.NICStatus{{NetworkID: network.ID, IP: "10.10.0.2", PrefixLen: 24, MAC: macA}})
	if err != nil {
		t.Fatal(err)
	}
	tapB, err := b.runner.EnsureNICs(context.Background(), "vm-b", []messages.NICStatus{{NetworkID: network.ID, IP: "10.10.0.3", PrefixLen: 24, MAC: macB}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("taps %s and %s ready %s after the desired states", tapA[0], tapB[0], time.Since(start).Round(time.Millisecond))
	for _, n := range []*testNode{a, b} {
		if s := n.runner.Status(); !s.Reconciled || s.WireGuard != "userspace" || s.Error != "" || s.Endpoint != n.ip.String()+":51820" {
			t.Fatalf("%s status %+v", n.ns, s)
		}
	}
	epA := endpoint(t, a, "ea", tapA[0], macA, "10.10.0.2/24")
	endpoint(t, b, "eb", tapB[0], macB, "10.10.0.3/24")

	// WireGuard handshakes on the first packet: allow a few tries.
	var out []byte
	if !testutil.Until(20*time.Second, 200*time.Millisecond, func() bool {
		out, err = exec.Command("ip", "netns", "exec", epA, busybox, "ping", "-c", "3", "-W", "2", "10.10.0.3").CombinedOutput()
		return err == nil && strings.Contains(string(out), "3 packets received")
	}) {
		t.Fatalf("ping 10.10.0.3 from node a's endpoint: %v\n%s", err, out)
	}
	t.Logf("ping across nodes after %s:\n%s", time.Since(start).Round(time.Millisecond), out)

	// An unchanged state reconciles quickly and changes nothing.
	t0 := time.Now()
	rep, err := a.runner.reconcile(context.Background())
	if err != nil || rep.Changes != 0 {
		t.Fatalf("second reconcile: %+v %v", rep, err)
	}
	t.Logf("unchanged reconcile took %s", time.Since(t0).Round(time.Microsecond))

	// Releasing a VM removes its tap and nothing else.
	if err := a.runner.ReleaseNICs(context.Background(), "vm-a"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", a.ns, "link", "show", "dev", tapA[0]).CombinedOutput(); err == nil {
		t.Errorf("tap %s still there after release:\n%s", tapA[0], out)
	}
}
