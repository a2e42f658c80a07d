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
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/netnstest"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/test/guest"
)

// The overlay end to end: an otherix-api in the host namespace, two agents
// each inside its own node namespace, joined by an underlay bridge in a
// third namespace that also reaches the host through one veth (a /24 of its
// own; the host gets that link only, removed at cleanup), an overlay
// network, one test guest per node, and the guests ping each other over
// VXLAN inside userspace WireGuard. The network has egress: each guest
// fetches a page from an "outside" namespace on the underlay and the
// outside sees the request come from the guest's own node. A third guest on
// a network without egress cannot reach the outside.

// ipIn runs ip in a test namespace (or the host for "").
func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return netnstest.IP(t, args...)
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
		"--data-plane", "on", "--wireguard", "userspace", "--wireguard-if", a.wgIf)
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
			PublicKey     string `json:"public_key"`
			Endpoint      string `json:"endpoint"`
			WireGuard     string `json:"wireguard"`
			TunnelOffload bool   `json:"tunnel_offload"`
			Reconciled    bool   `json:"reconciled"`
			Error         string `json:"error"`
		} `json:"overlay"`
	} `json:"status"`
}

// outsideServer is an HTTP server listening inside a test namespace: it
// records, per request path, the remote addresses it saw.
type outsideServer struct {
	mu   sync.Mutex
	seen map[string][]string // path -> remote hosts
}

func (o *outsideServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	o.mu.Lock()
	o.seen[r.URL.Path] = append(o.seen[r.URL.Path], host)
	o.mu.Unlock()
	fmt.Fprintf(w, "OTHERIX-OUTSIDE-SAW %s\n", host)
}

// snapshot copies what the server saw so far.
func (o *outsideServer) snapshot() map[string][]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string][]string, len(o.seen))
	for k, v := range o.seen {
		m[k] = append([]string(nil), v...)
	}
	return m
}

// listenIn opens a TCP listener inside the named namespace (the socket
// stays there).
func listenIn(t *testing.T, nsName, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	netnstest.In(t, nsName, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, nsName, err)
	}
	return ln
}

// startOutside serves an outsideServer on addr inside nsName until the
// test ends.
func startOutside(t *testing.T, nsName, addr string) *outsideServer {
	t.Helper()
	o := &outsideServer{seen: map[string][]string{}}
	ln := listenIn(t, nsName, addr)
	srv := &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return o
}

// netDiag is what a failed egress assertion shows about a node namespace.
func netDiag(ns string) string {
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-n", ns, "-br", "addr"},
		{"ip", "-n", ns, "route"},
		{"ip", "netns", "exec", ns, "nft", "list", "ruleset"},
		{"ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		fmt.Fprintf(&b, "$ %s (%v)\n%s\n", strings.Join(args, " "), err, out)
	}
	return b.String()
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
	ul := netnstest.New(t, "oxe", "ul")
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
		ns := netnstest.New(t, "oxe", name)
		ipIn(t, ul, "link", "add", "u"+name, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipIn(t, ul, "link", "set", "u"+name, "master", "br0", "up")
		ipIn(t, ns, "addr", "add", fmt.Sprintf("%s.%d/24", sub, i+2), "dev", "eth0")
		ipIn(t, ns, "link", "set", "eth0", "up")
		nodeNS[name] = ns
	}
	// The outside: one more namespace on the underlay, with an HTTP server
	// that records who asked. It has no route to the overlays, so what
	// reaches it from a VM can only be masqueraded by a node.
	outNS := netnstest.New(t, "oxe", "out")
	outIP := sub + ".250"
	ipIn(t, ul, "link", "add", "uout", "type", "veth", "peer", "name", "eth0", "netns", outNS)
	ipIn(t, ul, "link", "set", "uout", "master", "br0", "up")
	ipIn(t, outNS, "addr", "add", outIP+"/24", "dev", "eth0")
	ipIn(t, outNS, "link", "set", "eth0", "up")
	outside := startOutside(t, outNS, outIP+":8080")

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
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "nodes ready with their overlay keys", func() bool {
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
	if !testutil.Until(15*time.Second, 200*time.Millisecond, func() bool {
		ok := true
		for _, name := range []string{"n1", "n2"} {
			var n overlayNode
			call(t, "GET", api.URL+"/v1/nodes/"+name, nil, &n)
			nodes[name] = n
			ok = ok && n.TunnelIP != "" && n.Status.Overlay != nil && n.Status.Overlay.Reconciled
		}
		return ok
	}) {
		if nodes["n1"].TunnelIP == "" {
			t.Skipf("the control plane assigns no tunnel IPs (it does not send DesiredState.Overlay yet): nothing to test\n%s", agentLogs())
		}
		t.Fatalf("nodes did not reconcile their overlay: %+v\n%s", nodes, agentLogs())
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
	c.mustCLI("network", "create", "net1", "--cidr", "10.77.0.0/24", "--type", "overlay", "--egress")
	c.mustCLI("network", "create", "net2", "--cidr", "10.78.0.0/24", "--type", "overlay")

	guests := []string{"g1", "g2", "g3"}
	ips := map[string]string{"g1": "10.77.0.11", "g2": "10.77.0.12", "g3": "10.78.0.13"}
	netOf := map[string]string{"g1": "net1", "g2": "net1", "g3": "net2"}
	peerOf := map[string]string{"g1": "g2", "g2": "g1"}
	node := map[string]string{"g1": "n1", "g2": "n2", "g3": "n1"}
	nodeIP := map[string]string{"n1": sub + ".2", "n2": sub + ".3"}
	outURL := func(g string) string { return "http://" + outIP + ":8080/from/" + g }
	// The guests' scripts. Each wget is bounded by timeout: busybox wget has
	// no timeout of its own and a dropped SYN would hang it for minutes.
	scripts := map[string]string{}
	for _, g := range []string{"g1", "g2"} {
		peer := ips[peerOf[g]]
		// The peer may boot later: try for up to 90 s, then ping for real.
		// Egress needs the node's reconcile of the network: retry it too.
		scripts[g] = "#!/bin/sh\ni=0\nwhile [ $i -lt 90 ]; do ping -c 1 -W 1 " + peer + " >/dev/null 2>&1 && break; i=$((i+1)); sleep 1; done\n" +
			"echo OTHERIX-PING " + peer + " after $i tries\nping -c 3 -W 2 " + peer + "\n" +
			"j=0\nwhile [ $j -lt 20 ]; do r=$(timeout 2 wget -q -O - " + outURL(g) + " 2>&1) && break; j=$((j+1)); sleep 1; done\n" +
			"if [ $j -lt 20 ]; then echo \"OTHERIX-EGRESS ok after $j tries: $r\"; else echo \"OTHERIX-EGRESS failed after $j tries: $r\"; fi\n"
	}
	// g3's network has no egress: once the gateway answers (the data plane
	// is there), the outside must stay unreachable for 5 tries (~10 s).
	scripts["g3"] = "#!/bin/sh\ni=0\nwhile [ $i -lt 90 ]; do ping -c 1 -W 1 169.254.1.1 >/dev/null 2>&1 && break; i=$((i+1)); sleep 1; done\n" +
		"if [ $i -lt 90 ]; then echo OTHERIX-GATEWAY ok after $i tries; else echo OTHERIX-GATEWAY failed; exit 1; fi\n" +
		"j=0\nwhile [ $j -lt 5 ]; do r=$(timeout 1 wget -q -O - " + outURL("g3") + " 2>&1) && break; j=$((j+1)); sleep 1; done\n" +
		"if [ $j -lt 5 ]; then echo \"OTHERIX-EGRESS ok after $j tries: $r\"; else echo \"OTHERIX-EGRESS failed after $j tries\"; fi\n"
	uds := map[string]string{}
	for _, g := range guests {
		uds[g] = filepath.Join(t.TempDir(), g+".sh")
		if err := os.WriteFile(uds[g], []byte(scripts[g]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// g1 first, which caches the image on n1; then g2 (n2) and g3 (n1, the
	// image cached) together, so the third guest adds little to the run.
	type createResult struct {
		out  string
		err  error
		took time.Duration
	}
	cliBin := filepath.Join(binDir(t), "otherix")
	start := time.Now()
	created := map[string]time.Duration{}
	for _, batch := range [][]string{{"g1"}, {"g2", "g3"}} {
		results := make([]createResult, len(batch))
		var wg sync.WaitGroup
		for i, g := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(cliBin, "vm", "create", g,
					"--image", imgSrv.URL+"/images/guest.qcow2", "--sha256", hex.EncodeToString(sum[:]),
					"--memory", "256Mi", "--disk", "1Gi", "--node", node[g], "--network", netOf[g]+":"+ips[g],
					"--user-data", uds[g], "--wait")
				cmd.Env = c.cliEnv
				out, err := cmd.CombinedOutput()
				results[i] = createResult{string(out), err, time.Since(start).Round(100 * time.Millisecond)}
			}()
		}
		wg.Wait()
		for i, g := range batch {
			if results[i].err != nil {
				t.Fatalf("vm create %s: %v\n%s\n%s", g, results[i].err, results[i].out, agentLogs())
			}
			created[g] = results[i].took
		}
	}
	t.Logf("create --wait returned at %v", created)
	// When each guest printed what, polled from all serial logs together.
	seen := map[string]time.Duration{}
	marks := []string{guest.ReadyMarker, guest.NetReadyMarker, "OTHERIX-PING", "OTHERIX-GATEWAY", "OTHERIX-EGRESS", guest.UserDataDoneMarker}
	logs := map[string]string{}
	if !testutil.Until(180*time.Second, 250*time.Millisecond, func() bool {
		done := true
		for _, g := range guests {
			logs[g], _ = c.cli("vm", "logs", g)
			for _, m := range marks {
				if _, ok := seen[g+" "+m]; !ok && strings.Contains(logs[g], m) {
					seen[g+" "+m] = time.Since(start).Round(100 * time.Millisecond)
				}
			}
			_, ok := seen[g+" "+guest.UserDataDoneMarker]
			done = done && ok
		}
		return done
	}) {
		var b strings.Builder
		for _, g := range guests {
			fmt.Fprintf(&b, "guest %s:\n%s\n", g, tail(logs[g], 1500))
		}
		t.Fatalf("guests did not finish their user-data within 180s (markers %v):\n%s%s\n%s%s",
			seen, b.String(), agentLogs(), netDiag(nodeNS["n1"]), netDiag(nodeNS["n2"]))
	}
	t.Logf("markers seen, from the first create: %v", seen)
	for _, g := range guests {
		if !strings.Contains(logs[g], guest.NetReadyMarker+" "+ips[g]) {
			t.Fatalf("guest %s did not configure %s:\n%s\n%s", g, ips[g], tail(logs[g], 3000), agentLogs())
		}
	}
	for _, g := range []string{"g1", "g2"} {
		out := logs[g]
		i := strings.Index(out, "OTHERIX-PING")
		if i < 0 || !strings.Contains(out[i:], "3 packets received") {
			t.Fatalf("guest %s did not reach %s:\n%s\n%s", g, ips[peerOf[g]], tail(out, 3000), agentLogs())
		}
		t.Logf("guest %s:\n%s", g, tail(out[i:], 900))
	}

	// Egress: each net1 guest reached the outside, masqueraded behind its
	// own node's underlay address, never with its overlay address.
	saw := outside.snapshot()
	t.Logf("the outside saw: %v", saw)
	for _, g := range []string{"g1", "g2"} {
		want := nodeIP[node[g]]
		got := saw["/from/"+g]
		if !strings.Contains(logs[g], "OTHERIX-EGRESS ok") || len(got) == 0 {
			t.Errorf("guest %s (egress on %s) did not reach the outside %s:\n%s\n%s",
				g, node[g], outIP, tail(logs[g], 1500), netDiag(nodeNS[node[g]]))
			continue
		}
		for _, h := range got {
			if h != want {
				t.Errorf("the outside saw %s's request from %s, want %s (its node %s)", g, h, want, node[g])
			}
		}
		if !strings.Contains(logs[g], "OTHERIX-OUTSIDE-SAW "+want) {
			t.Errorf("guest %s did not print the outside's answer naming %s:\n%s", g, want, tail(logs[g], 1500))
		}
	}
	// Opt-in: g3 reached its gateway but not the outside, which saw
	// nothing from it (nor anything from an overlay address).
	if !strings.Contains(logs["g3"], "OTHERIX-GATEWAY ok") {
		t.Errorf("guest g3 never reached its gateway:\n%s\n%s", tail(logs["g3"], 1500), netDiag(nodeNS["n1"]))
	}
	if !strings.Contains(logs["g3"], "OTHERIX-EGRESS failed after 5 tries") {
		t.Errorf("guest g3 (net2, no egress) did not fail to reach the outside:\n%s\n%s", tail(logs["g3"], 1500), netDiag(nodeNS["n1"]))
	}
	if got := saw["/from/g3"]; len(got) != 0 {
		t.Errorf("the outside saw g3 (net2, no egress) from %v", got)
	}
	paths := make([]string, 0, len(saw))
	for p := range saw {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		for _, h := range saw[p] {
			if h != nodeIP["n1"] && h != nodeIP["n2"] {
				t.Errorf("the outside saw %s from %s, not a node's underlay address", p, h)
			}
		}
	}
	if i := strings.Index(logs["g3"], "OTHERIX-GATEWAY"); i >= 0 {
		t.Logf("guest g3:\n%s", tail(logs["g3"][i:], 600))
	}

	// Delete removes the taps with the VMs.
	for _, g := range guests {
		c.mustCLI("vm", "delete", g, "--force", "--wait")
	}
	for _, name := range []string{"n1", "n2"} {
		testutil.Eventually(t, 15*time.Second, 50*time.Millisecond, "no taps left on "+name, func() bool {
			out := ipIn(t, nodeNS[name], "-o", "link", "show")
			return !strings.Contains(out, ": oxt")
		})
	}
}
