// Command overlay measures issue #7's data plane between two namespaced
// nodes (run as root): one TCP stream's throughput (an in-process Go load
// generator, and Debian's iperf3 when installed) and UDP round-trip latency
// for the bare underlay (plain routing over a veth pair) and for the
// overlay (VXLAN inside WireGuard, built by the real netfabric code), with
// kernel WireGuard when the module exists; then the time to reconcile a node
// with 100 networks and 1,000 FDB entries, first and unchanged.
//
// Every namespace, link, nftables table and process it makes lives in
// namespaces named oxbench-<pid>-* and is removed on exit, also on failure
// or Ctrl-C.
//
// Usage: go run ./test/bench/overlay [-d 10s] [-n 10000] [-reconciles 20] [-iperf=true] [-underlay-mtu 1500]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/netfabric"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func main() {
	exit := 0
	defer func() { os.Exit(exit) }()
	dur := flag.Duration("d", 10*time.Second, "duration of each throughput stream")
	rtts := flag.Int("n", 10000, "UDP round trips per latency figure")
	reconciles := flag.Int("reconciles", 20, "unchanged reconciles timed")
	useIperf := flag.Bool("iperf", true, "also measure with iperf3 when it is installed")
	underlayMTU := flag.Int("underlay-mtu", 1500, "MTU of the underlay veths; WireGuard and the overlay network get the MTUs the control plane derives from it")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (load generator and userspace WireGuard) to FILE")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Println("overlay bench: skipped, needs root (network namespaces, links, nftables)")
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Println("overlay bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *underlayMTU < 1280 || *underlayMTU > 9216 {
		fmt.Println("overlay bench: -underlay-mtu must be within 1280..9216")
		os.Exit(2)
	}
	if err := run(ctx, *dur, *rtts, *reconciles, *useIperf, *underlayMTU); err != nil {
		fmt.Println("overlay bench: FAILED:", err)
		exit = 1
	}
}

type row struct {
	path     string
	goMBs    float64
	iperfMBs float64 // 0: not measured
	retrans  int     // iperf3 sender's TCP retransmissions
	lat      latency
	note     string
}

func run(ctx context.Context, dur time.Duration, rtts, reconciles int, useIperf bool, underlayMTU int) (err error) {
	var rv reverts
	defer func() {
		if uerr := rv.unwind(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", uerr))
		}
	}()
	if useIperf {
		if _, lerr := exec.LookPath("iperf3"); lerr != nil {
			fmt.Println("iperf3 not installed (apt-get install iperf3): Go load generator only")
			useIperf = false
		}
	}
	fmt.Printf("overlay bench: %s, GOMAXPROCS=%d, %d CPUs, %s; accelerator: none (no QEMU: veth pairs and TUN devices in namespaces)\n",
		time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), runtime.NumCPU(), uptime())
	wgMTU, ovMTU := messages.NetworkMTUs(underlayMTU)
	fmt.Printf("each stream %v, %d UDP round trips of 64 bytes; MB = 10^6 bytes; MTUs: underlay %d, wireguard %d, overlay %d\n",
		dur, rtts, underlayMTU, wgMTU, ovMTU)

	kernelNote, err := kernelWireGuard(ctx, &rv)
	if err != nil {
		return err
	}
	bare, err := buildBare(&rv, underlayMTU)
	if err != nil {
		return err
	}
	paths := []*path{bare}
	ov, wgOnly, impl, err := buildOverlay(ctx, &rv, "user", netfabric.WireGuardUserspace, underlayMTU, false, nil)
	if err != nil {
		return err
	}
	if impl != netfabric.WireGuardUserspace {
		return fmt.Errorf("overlay reports %q wireguard, want userspace", impl)
	}
	paths = append(paths, ov)
	// The same path on wireguard-go's own TUN, which takes no UDP tunnel
	// GSO: what the batching TUN (nodeagent/wgtun) is measured against.
	plain, _, _, err := buildOverlay(ctx, &rv, "plain", netfabric.WireGuardUserspace, underlayMTU, true, nil)
	if err != nil {
		return err
	}
	plain.name += ", wireguard-go's TUN (no tunnel offload)"
	paths = append(paths, plain)
	if kernelNote == "" {
		kov, kwg, _, err := buildOverlay(ctx, &rv, "kern", netfabric.WireGuardKernel, underlayMTU, false, nil)
		if err != nil {
			return err
		}
		paths = append(paths, kov, kwg)
	}
	paths = append(paths, wgOnly)
	var rows []row
	for i, p := range paths {
		port := 5201 + 10*i
		if err := reachable(ctx, p, port, 15*time.Second); err != nil {
			return err
		}
		r := row{path: p.name}
		fmt.Printf("%s: TCP stream (Go)… %s\n", p.name, uptime())
		if r.goMBs, err = tcpStream(ctx, p, port+1, dur); err != nil {
			return fmt.Errorf("%s: tcp: %w", p.name, err)
		}
		if useIperf {
			fmt.Printf("%s: TCP stream (iperf3)… %s\n", p.name, uptime())
			if r.iperfMBs, r.retrans, err = iperf3(ctx, p, port+2, dur); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
		fmt.Printf("%s: after the streams: %s\n", p.name, p.drops())
		if len(p.fabs) > 0 {
			fmt.Printf("%s: TUN batching (cumulative): %s\n", p.name, p.offload())
		}
		fmt.Printf("%s: UDP ping-pong… %s\n", p.name, uptime())
		if r.lat, err = pingPong(ctx, p, port+3, rtts); err != nil {
			return fmt.Errorf("%s: latency: %w", p.name, err)
		}
		rows = append(rows, r)
	}
	if kernelNote != "" {
		rows = append(rows, row{path: "overlay, kernel wireguard", note: kernelNote})
	}

	fmt.Printf("reconcile: 100 networks, 1000 FDB entries… %s\n", uptime())
	rt, err := timeReconcile(ctx, &rv, reconciles)
	if err != nil {
		return err
	}

	fmt.Println()
	fmt.Println("| path | Go TCP, 1 stream | iperf3, 1 stream | UDP RTT p50 | p99 | max | lost |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		if r.note != "" {
			fmt.Printf("| %s | %s | | | | | |\n", r.path, r.note)
			continue
		}
		ip := "—"
		if r.iperfMBs > 0 {
			ip = fmt.Sprintf("%.0f MB/s (%d retr.)", r.iperfMBs, r.retrans)
		}
		fmt.Printf("| %s | %.0f MB/s | %s | %s | %s | %s | %d |\n", r.path, r.goMBs, ip, usec(r.lat.p50), usec(r.lat.p99), usec(r.lat.max), r.lat.lost)
	}
	base := rows[0]
	for _, r := range rows[1:] {
		if r.note != "" {
			continue
		}
		line := fmt.Sprintf("%s ÷ bare underlay: Go %.0f %%", r.path, 100*r.goMBs/base.goMBs)
		if r.iperfMBs > 0 && base.iperfMBs > 0 {
			line += fmt.Sprintf(", iperf3 %.0f %%", 100*r.iperfMBs/base.iperfMBs)
		}
		fmt.Printf("%s; p50 latency ×%.1f (target: throughput ≥ 50 %%)\n", line, float64(r.lat.p50)/float64(base.lat.p50))
	}
	fmt.Printf("reconcile, 100 networks + 1000 FDB entries (%s wireguard, 10 peers): first %v (%d changes); unchanged p50 %v, max %v over %d runs, %d of them changed something (target: unchanged < 50 ms)\n",
		rt.wireguard, rt.first.Round(time.Millisecond), rt.firstChanges, rt.p50.Round(100*time.Microsecond), rt.max.Round(100*time.Microsecond), rt.runs, rt.changedReruns)
	if rt.changedReruns != 0 {
		return fmt.Errorf("%d unchanged reconciles changed something", rt.changedReruns)
	}
	fmt.Printf("overlay bench: done, %s\n", uptime())
	return nil
}

// kernelWireGuard returns "" when kernel WireGuard works here, else why not.
func kernelWireGuard(ctx context.Context, rv *reverts) (string, error) {
	ns, err := newNS(rv, "kprobe")
	if err != nil {
		return "", err
	}
	keyDir, err := os.MkdirTemp("", "oxbench-keys")
	if err != nil {
		return "", err
	}
	rv.push(func() error { return os.RemoveAll(keyDir) })
	fab, err := netfabric.New(netfabric.Options{Netns: ns.path, KeyDir: keyDir, WireGuard: netfabric.WireGuardKernel, WireGuardIf: fmt.Sprintf("oxb%dk", os.Getpid()%1000000)})
	if err != nil {
		return "", err
	}
	rv.push(fab.Close)
	_, err = fab.Reconcile(ctx, netfabric.Desired{TunnelIP: netip.MustParsePrefix("10.96.0.1/24")})
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, netfabric.ErrNoWireGuard):
		return "not available on this host (" + err.Error() + ")", nil
	default:
		return "", fmt.Errorf("kernel wireguard probe: %w", err)
	}
}

func genKey() (string, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", err
	}
	return k.PublicKey().String(), nil
}

func usec(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// uptime is the host's load, printed with every phase: the machine is shared.
func uptime() string {
	if out, err := exec.Command("uptime").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	b, _ := os.ReadFile("/proc/loadavg")
	return "loadavg " + strings.TrimSpace(string(b))
}
