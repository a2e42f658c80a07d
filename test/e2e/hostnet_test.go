//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/netnstest"
	"github.com/otherix/otherix/internal/testutil"
)

// hostNode is the part of a node this test reads.
type hostNode struct {
	TunnelIP string `json:"tunnel_ip"`
	Status   struct {
		Overlay *struct {
			Reconciled bool   `json:"reconciled"`
			Error      string `json:"error"`
		} `json:"overlay"`
		Conditions []struct {
			Type    string `json:"type"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"conditions"`
	} `json:"status"`
}

func (n hostNode) condition(typ string) (status, reason, msg string) {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Reason, c.Message
		}
	}
	return "", "", ""
}

// TestAgentRefusesOverlayOverHostResolver runs the real binaries on a node
// namespace whose resolver sits inside the cluster's overlay supernet (as
// 10.255.255.53 sat inside 10.240.0.0/12 in issue 13): the agent refuses
// its data plane, the namespace's links, addresses and routes stay byte for
// byte as they were, and the node's HostNetworkConflict condition names the
// resolver. The control plane then refuses a supernet over the node's own
// LAN, takes a clear one, and the node is re-addressed into it: the
// condition clears and the WireGuard interface comes up in the new
// supernet.
func TestAgentRefusesOverlayOverHostResolver(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	pid := os.Getpid()
	sub := fmt.Sprintf("10.214.%d", pid%250+1)
	hostIP := sub + ".1"
	ul := netnstest.New(t, "oxe", "hul")
	ipIn(t, ul, "link", "add", "br0", "type", "bridge")
	ipIn(t, ul, "link", "set", "br0", "up")
	hostLink := fmt.Sprintf("oxhh%d", pid%100000)
	ipIn(t, "", "link", "add", hostLink, "type", "veth", "peer", "name", "uhost", "netns", ul)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostLink).Run() })
	ipIn(t, ul, "link", "set", "uhost", "master", "br0", "up")
	ipIn(t, "", "addr", "add", hostIP+"/24", "dev", hostLink)
	ipIn(t, "", "link", "set", hostLink, "up")
	ns := netnstest.New(t, "oxe", "hn1")
	ipIn(t, ul, "link", "add", "uhn1", "type", "veth", "peer", "name", "eth0", "netns", ns)
	ipIn(t, ul, "link", "set", "uhn1", "master", "br0", "up")
	ipIn(t, ns, "addr", "add", sub+".2/24", "dev", "eth0")
	ipIn(t, ns, "link", "set", "eth0", "up")
	ipIn(t, ns, "route", "add", "default", "via", hostIP)
	// ip netns exec mounts /etc/netns/NAME/resolv.conf over
	// /etc/resolv.conf: this node's resolver is inside 100.87.0.0/16, the
	// default supernet.
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 100.87.255.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// IPv4 only: the kernel's own IPv6 autoconfiguration (DAD, link-local
	// routes) moves on by itself; the agent installs nothing IPv6.
	state := func() string {
		return ipIn(t, ns, "-d", "link", "show") + ipIn(t, ns, "-4", "addr", "show") + ipIn(t, ns, "-4", "route", "show", "table", "all") +
			ipIn(t, ns, "-4", "rule", "show") + ipIn(t, "", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward")
	}
	before := state()

	agentLn, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	agentAddr := agentLn.Addr().String()
	agentLn.Close()
	dataDir := t.TempDir()
	api := startAPI(t, dataDir, "OTHERIX_HEARTBEAT__INTERVAL=1s", "OTHERIX_AGENT_LISTEN="+agentAddr)
	a := startNSAgent(t, api, ns, "hn1")
	logs := func() string { return tail(a.proc.out.String(), 4000) }

	var n hostNode
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "the HostNetworkConflict condition", func() bool {
		call(t, "GET", api.URL+"/v1/nodes/hn1", nil, &n)
		st, _, _ := n.condition("HostNetworkConflict")
		return st == "True"
	})
	_, reason, msg := n.condition("HostNetworkConflict")
	if reason != "PrefixOverlapsHost" || !strings.Contains(msg, "overlay supernet on "+a.wgIf+" 100.87.0.0/16 overlaps 100.87.255.53/32 (resolver /etc/resolv.conf)") {
		t.Fatalf("condition %s %q\n%s", reason, msg, logs())
	}
	if after := state(); after != before {
		t.Fatalf("the node's host changed:\n--- before\n%s\n--- after\n%s\n%s", before, after, logs())
	}

	c := &cluster{t: t, api: api, dataDir: dataDir, agent: a.proc}
	c.cliEnv = append(os.Environ(), "OTHERIX_CONFIG="+filepath.Join(t.TempDir(), "otherix-config"))
	fp := caFingerprint(t, filepath.Join(dataDir, "pki", "ca.pem"))
	if out, code := c.cliIn(adminPassword, "login", api.URL, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp); code != 0 {
		t.Fatalf("otherix login: exit %d\n%s", code, out)
	}
	out := c.mustCLI("node", "describe", "hn1")
	if !strings.Contains(out, "HostNetworkConflict") || !strings.Contains(out, "overlaps 100.87.255.53/32") {
		t.Fatalf("node describe:\n%s", out)
	}
	if out, code := c.cli("cluster", "settings", "set", "overlay_supernet=10.214.0.0/16"); code != 1 ||
		!strings.Contains(out, "supernet_host_conflict") || !strings.Contains(out, "on node hn1") {
		t.Fatalf("a supernet over the node's lan: exit %d\n%s", code, out)
	}
	c.mustCLI("cluster", "settings", "set", "overlay_supernet=100.88.0.0/16")
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "the node re-addressed with a clean reconcile", func() bool {
		call(t, "GET", api.URL+"/v1/nodes/hn1", nil, &n)
		st, _, _ := n.condition("HostNetworkConflict")
		return st == "False" && n.TunnelIP == "100.88.0.1" && n.Status.Overlay != nil && n.Status.Overlay.Reconciled
	})
	if addrs := ipIn(t, ns, "-4", "addr", "show", "dev", a.wgIf); !strings.Contains(addrs, "inet 100.88.0.1/16") {
		t.Fatalf("%s addresses:\n%s", a.wgIf, addrs)
	}
	if routes := ipIn(t, ns, "route", "show", "table", "all"); strings.Contains(routes, "100.87.") {
		t.Fatalf("a route into the resolver's prefix:\n%s", routes)
	}
}
