// Command vm measures VM create→running on this host, side by side in one
// interleaved loop: the floor (qemu-img overlay + QEMU with the agent's argv
// until QMP says running), libvirt (`virsh create` until domstate running)
// and Otherix (POST /v1/vms until its task's long poll says success, and the
// whole `otherix vm create --wait` process), then `otherix vm list` against
// `virsh list`. scripts/bench-vm.sh starts libvirt's daemons and runs it;
// `make bench` runs the script. Memory per VM actor is the Go benchmark in
// memory_etcd_test.go.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/otherix/otherix/test/bench/benchcluster"
)

func main() {
	n := flag.Int("n", 20, "creates per path per round")
	rounds := flag.Int("rounds", 3, "rounds of the whole interleaved loop")
	listRuns := flag.Int("list-runs", 30, "runs of `otherix vm list` and `virsh list` per round")
	listVMs := flag.Int("list-vms", 3, "VMs that exist (in each tool) while list is timed")
	useLibvirt := flag.Bool("libvirt", true, "measure libvirt too (needs root and a running libvirtd)")
	bin := flag.String("bin", "bin", "directory of otherix, otherix-api and otherix-agent (make build)")
	accel := flag.String("accel", "auto", "accelerator for every path: kvm, tcg, or auto (the agent's --accel auto judges, and the floor and libvirt use what it chose)")
	flag.BoolVar(&stepsOnly, "steps-only", false, "time only the agent's create steps (no cluster, no libvirt)")
	flag.BoolVar(&keep, "keep", false, "keep the work dir (API and agent logs) and print its path; it is always kept when the run fails")
	flag.Func("agent-flag", "an extra flag for otherix-agent serve, e.g. -agent-flag=--qemu-user=nobody (repeatable)", func(s string) error {
		agentFlags = append(agentFlags, s)
		return nil
	})
	flag.Parse()
	b, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	if err := run(b, *n, *rounds, *listRuns, *listVMs, *useLibvirt, *accel); err != nil {
		fail(err)
	}
}

// keep leaves the work dir behind for its logs; stepsOnly skips everything
// but the agent's steps.
var keep, stepsOnly bool

// agentFlags are added to the agent's command line after --accel.
var agentFlags []string

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-vm:", err)
	os.Exit(1)
}

// path is one way of creating a VM, measured in the interleaved loop.
type path struct {
	s       *series
	create  func(i int) (time.Duration, error)
	destroy func(i int)
}

func run(bin string, n, rounds, listRuns, listVMs int, useLibvirt bool, accel string) (err error) {
	// World-readable and short: libvirt's QEMU runs as libvirt-qemu and
	// socket paths must fit in 107 bytes.
	dir, err := os.MkdirTemp("/var/tmp", "oxbench")
	if err != nil {
		return err
	}
	// The work dir holds the API's and the agent's logs: it stays when
	// asked to, and when the run fails, so the log an error names exists.
	defer func() {
		if keep || err != nil {
			fmt.Println("work dir (kept):", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	shape := vmShape{CPUs: 1, MemoryMiB: 256, DiskBytes: 1 << 30, Accel: accel}
	// The base image: a blank 1 GiB qcow2. A guest does not boot under this
	// host's nested KVM anyway; what is measured is the control path until
	// QEMU runs the vCPU.
	base := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "1G").CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img create base: %v: %s", err, out)
	}
	_ = os.Chmod(base, 0o644)
	imgs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/images/bench.qcow2" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, base)
	}))
	defer imgs.Close()

	if stepsOnly {
		if accel == "auto" {
			return fmt.Errorf("-steps-only needs -accel kvm or tcg (no agent runs to choose)")
		}
		return printSteps(dir, base, shape, n)
	}
	if useLibvirt {
		if out, err := virsh("version"); err != nil {
			fmt.Printf("libvirt: skipped, virsh cannot reach qemu:///system (%v: %s)\n", err, strings.TrimSpace(out))
			useLibvirt = false
		}
	} else {
		fmt.Println("libvirt: skipped (-libvirt=false)")
	}

	fmt.Printf("host: %d-VM shape %d vCPU, %d MiB, %d GiB overlay, -accel %s; load %s\n", 1, shape.CPUs, shape.MemoryMiB, shape.DiskBytes>>30, accel, loadavg())
	c, err := startCluster(bin, dir, imgs.URL+"/images/bench.qcow2", shape, nil, append([]string{"--accel", accel}, agentFlags...))
	if c != nil {
		defer c.Stop()
	}
	if err != nil {
		return err
	}
	fmt.Printf("cluster up (%s); accelerator used by the agent: %s (%s); warming up\n", time.Now().Format("15:04:05"), c.Accel, c.AccelReason)
	if accel == "auto" {
		if c.Accel != "kvm" && c.Accel != "tcg" {
			return fmt.Errorf("-accel auto: the agent reports accelerator %q", c.Accel)
		}
		// Every path runs on what the agent chose, so the ratios compare
		// like with like.
		shape.Accel = c.Accel
		c.shape.Accel = c.Accel
		fmt.Printf("floor and libvirt: -accel %s, as the agent chose\n", c.Accel)
	}
	fl := &floor{dir: filepath.Join(dir, "f"), base: base, cfg: shape}
	lv := &libvirt{dir: filepath.Join(dir, "l"), base: base, cfg: shape}

	// Warm-up (untimed): the first Otherix create downloads the image into
	// the agent's cache; the first of each path also warms the page cache.
	if _, id, err := c.createAPI("warmup"); err != nil {
		if cerr := c.Err(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("warm-up create: %w; last lines of %s:\n%s", err, c.Agent.Out.Name(), benchcluster.Tail(c.Agent.Out.Name(), 40))
	} else if err := c.deleteVM(id); err != nil {
		return fmt.Errorf("warm-up delete: %w", err)
	}
	if _, err := fl.createOne(0); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	fl.destroy(0)
	if useLibvirt {
		if _, err := lv.createOne(0); err != nil {
			return fmt.Errorf("libvirt: %w", err)
		}
		lv.destroy(0)
	}

	fmt.Printf("warm (%s)\n", time.Now().Format("15:04:05"))
	var all []roundResult
	for r := 1; r <= rounds; r++ {
		res, err := runRound(r, n, listRuns, listVMs, c, fl, lv, useLibvirt)
		if err != nil {
			return err
		}
		all = append(all, res)
		res.print()
	}
	printSummary(all, useLibvirt)

	// Where the agent's time goes: its steps, timed alone after the rounds.
	return printSteps(dir, base, shape, n)
}

func printSteps(dir, base string, shape vmShape, n int) error {
	steps, err := agentSteps(filepath.Join(dir, "steps"), base, shape, n)
	if err != nil {
		return fmt.Errorf("agent steps: %w", err)
	}
	fmt.Printf("\nagent create steps, each timed alone with the agent's packages (n=%d, load %s):\n", n, loadavg())
	var sum time.Duration
	for _, s := range steps {
		fmt.Printf("  %-18s p50 %-9s p99 %s\n", s.name, ms(s.median()), ms(s.pct(99)))
		sum += s.median()
	}
	fmt.Printf("  %-18s %s\n", "sum of p50s", ms(sum))
	return nil
}
