//go:build e2e

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/test/guest"
)

// The overlay end to end: an otherix-api in the host namespace, two agents
// each inside its own node namespace, joined by an underlay bridge in a
// third namespace that also reaches the host through one veth (a /24 of its
// own; the host gets that link only, removed at cleanup), an overlay
// network, one test guest per node, and the guests ping each other over
// VXLAN inside userspace WireGuard.

// ns runs ip in a test namespace (or the host for "").
func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func addNetns(t *testing.T, name string) {
	t.Helper()
	ipIn(t, "", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	ipIn(t, name, "link", "set", "lo", "up")
}

// nsAgent is an otherix-agent serve running inside a node namespace.
type nsAgent struct {
	name, ns, state, wgIf string
	proc                  *agentProcess
}

// startNSAgent enrolls a node and runs its agent inside ns with the data
// plane on (userspace WireGuard, a per-test interface name since UAPI
// sockets are shared by all namespaces).
func startNSAgent(t *testing.T, api *apiProcess, ns, name string) *nsAgent {
	t.Helper()
	state, err := os.MkdirTemp("", "oxn")
	if err != nil {
		t.Fatal(err)
	}
	a := &nsAgent{name: name, ns: ns, state: state, wgIf: fmt.Sprintf("oxw%d%s", os.Getpid()%100000, name)}
	t.Cleanup(func() {
		// Whatever is left running is ended by pid, then the state goes;
		// the namespace (and its taps and bridges) is deleted after.
		pids, _ := filepath.Glob(filepath.Join(state, "run", "*", "qemu.pid"))
		for _, f := range pids {
			var pid int
			if b, err := os.ReadFile(f); err == nil {
				if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		os.RemoveAll(state)
		// A killed userspace WireGuard leaves its UAPI socket behind.
		os.Remove(filepath.Join("/var/run/wireguard", a.wgIf+".sock"))
	})
	token := createJoinToken(t, api.URL, map[string]string{"ttl": "10m"})
	if out, err := bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", name, "--state-dir", state); err != nil {
		t.Fatalf("bootstrap %s: %v\n%s", name, err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, filepath.Join(binDir(t), "otherix-agent"), "serve",
		"--state-dir", state, "--accel", "tcg", "--listen", "0.0.0.0:0",
		"--overlay", "on", "--wireguard", "userspace", "--wireguard-if", a.wgIf)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", name, err)
	}
	// ip netns exec execs the agent: the pid is the agent's.
	p := &agentProcess{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.kill()
		}
	})
	a.proc = p
	return a
}

type overlayNode struct {
	Name     string `json:"name"`
	Phase    string `json:"phase"`
	TunnelIP string `json:"tunnel_ip"`
	Status   struct {
		Overlay *struct {
			PublicKey  string `json:"public_key"`
			Endpoint   string `json:"endpoint"`
			WireGuard  string `json:"wireguard"`
			Reconciled bool   `json:"reconciled"`
			Error      string `json:"error"`
		} `json:"overlay"`
	} `json:"status"`
}

func TestOverlayGuestsPingAcrossNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, bridges, taps")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	img := guest.Image(t)
	body, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)

	// Underlay: bridge br0 in namespace ul; the host reaches it through one
	// veth with the first address of a /24 of its own, the nodes with the
	// next ones.
	pid := os.Getpid()
	sub := fmt.Sprintf("10.213.%d", pid%250+1)
	hostIP := sub + ".1"
	ul := fmt.Sprintf("oxe-%d-ul", pid)
	addNetns(t, ul)
	ipIn(t, ul, "link", "add", "br0", "type", "bridge")
	ipIn(t, ul, "link", "set", "br0", "up")
	hostLink := fmt.Sprintf("oxeh%d", pid%100000)
	ipIn(t, "", "link", "add", hostLink, "type", "veth", "peer", "name", "uhost", "netns", ul)
	t.Cleanup(func() {
		// Usually gone with ul already; make sure.
		_ = exec.Command("ip", "link", "del", hostLink).Run()
	})
	ipIn(t, ul, "link", "set", "uhost", "master", "br0", "up")
	ipIn(t, "", "addr", "add", hostIP+"/24", "dev", hostLink)
	ipIn(t, "", "link", "set", hostLink, "up")
	nodeNS := map[string]string{}
	for i, name := range []string{"n1", "n2"} {
		ns := fmt.Sprintf("oxe-%d-%s", pid, name)
		addNetns(t, ns)
		ipIn(t, ul, "link", "add", "u"+name, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipIn(t, ul, "link", "set", "u"+name, "master", "br0", "up")
		ipIn(t, ns, "addr", "add", fmt.Sprintf("%s.%d/24", sub, i+2), "dev", "eth0")
		ipIn(t, ns, "link", "set", "eth0", "up")
		nodeNS[name] = ns
	}

	// The image server and the API's agent listener on the host's underlay
	// address, where the nodes reach them.
	ln, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	imgSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "guest.qcow2", time.Time{}, strings.NewReader(string(body)))
	}))
	imgSrv.Listener.Close()
	imgSrv.Listener = ln
	imgSrv.Start()
	t.Cleanup(imgSrv.Close)
	agentLn, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	agentAddr := agentLn.Addr().String()
	agentLn.Close()

	dataDir := t.TempDir()
	api := startAPI(t, dataDir, "OTHERIX_HEARTBEAT__INTERVAL=1s", "OTHERIX_AGENT_LISTEN="+agentAddr)
	n1 := startNSAgent(t, api, nodeNS["n1"], "n1")
	n2 := startNSAgent(t, api, nodeNS["n2"], "n2")
	agentLogs := func() string {
		return "agent n1:\n" + tail(n1.proc.out.String(), 4000) + "\nagent n2:\n" + tail(n2.proc.out.String(), 4000)
	}
	nodes := map[string]overlayNode{}
	eventually(t, 30*time.Second, "nodes ready with their overlay keys", func() bool {
		for _, name := range []string{"n1", "n2"} {
			var n overlayNode
			call(t, "GET", api.URL+"/v1/nodes/"+name, nil, &n)
			nodes[name] = n
			if n.Phase != "ready" || n.Status.Overlay == nil || n.Status.Overlay.PublicKey == "" {
				return false
			}
		}
		return true
	})
	for name, n := range nodes {
		t.Logf("node %s: overlay %+v tunnel ip %q", name, *n.Status.Overlay, n.TunnelIP)
	}
	// The control plane computes tunnel IPs, peers and the FDB: without it
	// there is nothing to reconcile to.
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, name := range []string{"n1", "n2"} {
			var n overlayNode
			call(t, "GET", api.URL+"/v1/nodes/"+name, nil, &n)
			nodes[name] = n
			ok = ok && n.TunnelIP != "" && n.Status.Overlay != nil && n.Status.Overlay.Reconciled
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			if nodes["n1"].TunnelIP == "" {
				t.Skipf("the control plane assigns no tunnel IPs (it does not send DesiredState.Overlay yet): nothing to test\n%s", agentLogs())
			}
			t.Fatalf("nodes did not reconcile their overlay: %+v\n%s", nodes, agentLogs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name, n := range nodes {
		if want := fmt.Sprintf("%s.%d:51820", sub, map[string]int{"n1": 2, "n2": 3}[name]); n.Status.Overlay.Endpoint != want ||
			n.Status.Overlay.WireGuard != "userspace" {
			t.Errorf("node %s overlay %+v, want endpoint %s over userspace", name, *n.Status.Overlay, want)
		}
	}

	c := &cluster{t: t, api: api, dataDir: dataDir, agent: n1.proc}
	cfg := filepath.Join(t.TempDir(), "otherix-config")
	c.cliEnv = append(os.Environ(), "OTHERIX_CONFIG="+cfg)
	fp := caFingerprint(t, filepath.Join(dataDir, "pki", "ca.pem"))
	if out, code := c.cliIn(adminPassword, "login", api.URL, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp); code != 0 {
		t.Fatalf("otherix login: exit %d\n%s", code, out)
	}
	c.mustCLI("network", "create", "net1", "--cidr", "10.77.0.0/24", "--type", "overlay")

	ips := map[string]string{"g1": "10.77.0.11", "g2": "10.77.0.12"}
	peerOf := map[string]string{"g1": "g2", "g2": "g1"}
	node := map[string]string{"g1": "n1", "g2": "n2"}
	start := time.Now()
	created := map[string]time.Duration{}
	for _, g := range []string{"g1", "g2"} {
		peer := ips[peerOf[g]]
		// The peer may boot later: try for up to 90 s, then ping for real.
		ud := filepath.Join(t.TempDir(), g+".sh")
		script := "#!/bin/sh\ni=0\nwhile [ $i -lt 90 ]; do ping -c 1 -W 1 " + peer + " >/dev/null 2>&1 && break; i=$((i+1)); sleep 1; done\n" +
			"echo OTHERIX-PING " + peer + " after $i tries\nping -c 3 -W 2 " + peer + "\n"
		if err := os.WriteFile(ud, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := c.cli("vm", "create", g, "--image", imgSrv.URL+"/images/guest.qcow2", "--sha256", hex.EncodeToString(sum[:]),
			"--memory", "256Mi", "--disk", "1Gi", "--node", node[g], "--network", "net1:"+ips[g], "--user-data", ud, "--wait")
		if code != 0 {
			t.Fatalf("vm create %s: exit %d\n%s\n%s", g, code, out, agentLogs())
		}
		created[g] = time.Since(start).Round(100 * time.Millisecond)
	}
	t.Logf("create --wait returned at %v", created)
	// When each guest printed what, polled from both serial logs together.
	seen := map[string]time.Duration{}
	eventually(t, 120*time.Second, "both guests to configure their NIC", func() bool {
		for _, g := range []string{"g1", "g2"} {
			out, _ := c.cli("vm", "logs", g)
			for _, m := range []string{guest.ReadyMarker, guest.NetReadyMarker + " " + ips[g]} {
				if _, ok := seen[g+" "+m]; !ok && strings.Contains(out, m) {
					seen[g+" "+m] = time.Since(start).Round(100 * time.Millisecond)
				}
			}
		}
		_, ok1 := seen["g1 "+guest.NetReadyMarker+" "+ips["g1"]]
		_, ok2 := seen["g2 "+guest.NetReadyMarker+" "+ips["g2"]]
		return ok1 && ok2
	})
	t.Logf("markers seen, from the first create: %v", seen)
	for _, g := range []string{"g1", "g2"} {
		c.agent = map[string]*nsAgent{"n1": n1, "n2": n2}[node[g]].proc
		c.waitLog(g, guest.UserDataDoneMarker, 1, 180*time.Second)
		out, _ := c.cli("vm", "logs", g)
		i := strings.Index(out, "OTHERIX-PING")
		if i < 0 || !strings.Contains(out[i:], "3 packets received") {
			t.Fatalf("guest %s did not reach %s:\n%s\n%s", g, ips[peerOf[g]], tail(out, 3000), agentLogs())
		}
		t.Logf("guest %s:\n%s", g, tail(out[i:], 600))
	}

	// Delete removes the taps with the VMs.
	for _, g := range []string{"g1", "g2"} {
		c.mustCLI("vm", "delete", g, "--force", "--wait")
	}
	for _, name := range []string{"n1", "n2"} {
		eventually(t, 15*time.Second, "no taps left on "+name, func() bool {
			out := ipIn(t, nodeNS[name], "-o", "link", "show")
			return !strings.Contains(out, ": oxt")
		})
	}
}
