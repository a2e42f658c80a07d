package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// roundResult is one round of every path.
type roundResult struct {
	round                 int
	loadBefore, loadAfter string
	floor, libvirt        *series
	api, cli              *series
	oxList, virshList     *series
	// oxVersion is `otherix version --client`: the CLI process without any request,
	// the floor under `otherix vm list`.
	oxVersion *series
	// creates and agentLog split the API creates into legs.
	creates  []apiCreate
	agentLog string
}

// runRound runs n creates of each path, interleaved (the order rotates at
// each step so no path always follows the same one), then the list timings.
func runRound(r, n, listRuns, listVMs int, c *cluster, fl *floor, lv *libvirt, useLibvirt bool) (roundResult, error) {
	res := roundResult{round: r, loadBefore: loadavg(),
		floor: &series{name: "floor"}, libvirt: &series{name: "libvirt"}, api: &series{name: "otherix API"},
		cli: &series{name: "otherix CLI"}, oxList: &series{name: "otherix vm list"}, virshList: &series{name: "virsh list"},
		oxVersion: &series{name: "otherix version"}}
	var apiID string
	paths := []path{
		{s: res.floor, create: fl.createOne, destroy: fl.destroy},
		{s: res.api, create: func(i int) (time.Duration, error) {
			d, id, err := c.createAPI(fmt.Sprintf("api-%d-%d", r, i))
			apiID = id
			return d, err
		}, destroy: func(int) {
			if apiID != "" {
				if err := c.deleteVM(apiID); err != nil {
					fmt.Fprintln(os.Stderr, "delete:", err)
				}
			}
		}},
		{s: res.cli, create: func(i int) (time.Duration, error) {
			return c.createCLI(fmt.Sprintf("cli-%d-%d", r, i))
		}, destroy: func(i int) {
			if err := c.deleteVM(fmt.Sprintf("cli-%d-%d", r, i)); err != nil {
				fmt.Fprintln(os.Stderr, "delete:", err)
			}
		}},
	}
	if useLibvirt {
		paths = append(paths, path{s: res.libvirt, create: lv.createOne, destroy: lv.destroy})
	}
	c.creates = nil
	for i := 1; i <= n; i++ {
		for k := range paths {
			p := paths[(i+k)%len(paths)]
			d, err := p.create(i)
			if err != nil {
				if cerr := c.Err(); cerr != nil {
					// The API or the agent died: that is the cause, and
					// nothing is left to destroy through them.
					return res, fmt.Errorf("round %d, %s #%d: %w", r, p.s.name, i, cerr)
				}
				p.destroy(i)
				return res, fmt.Errorf("round %d, %s #%d: %w", r, p.s.name, i, err)
			}
			p.s.add(d)
			p.destroy(i)
		}
	}

	res.creates = c.creates
	res.agentLog = c.Agent.Out.Name()

	// A few VMs exist in each tool while list is timed.
	var ids []string
	for i := 0; i < listVMs; i++ {
		_, id, err := c.createAPI(fmt.Sprintf("list-%d-%d", r, i))
		if err != nil {
			return res, err
		}
		ids = append(ids, id)
		if useLibvirt {
			if _, err := lv.createOne(1000 + i); err != nil {
				return res, err
			}
		}
	}
	ox := filepath.Join(c.Bin, "otherix")
	for i := 0; i < listRuns; i++ {
		d, err := timeCmd(c.CLIEnv, ox, "vm", "list")
		if err != nil {
			return res, err
		}
		res.oxList.add(d)
		if d, err = timeCmd(c.CLIEnv, ox, "version", "--client"); err != nil {
			return res, err
		}
		res.oxVersion.add(d)
		if useLibvirt {
			d, err := timeCmd(os.Environ(), "virsh", "-c", "qemu:///system", "list")
			if err != nil {
				return res, err
			}
			res.virshList.add(d)
		}
	}
	for i, id := range ids {
		if err := c.deleteVM(id); err != nil {
			fmt.Fprintln(os.Stderr, "delete:", err)
		}
		if useLibvirt {
			lv.destroy(1000 + i)
		}
	}
	res.loadAfter = loadavg()
	return res, nil
}

// timeCmd is the wall time of one whole process, output discarded.
func timeCmd(env []string, name string, args ...string) (time.Duration, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return d, nil
}

func (r roundResult) print() {
	fmt.Printf("\nround %d (load before %s, after %s)\n", r.round, r.loadBefore, r.loadAfter)
	for _, s := range []*series{r.floor, r.libvirt, r.api, r.cli, r.oxList, r.oxVersion, r.virshList} {
		if len(s.d) == 0 {
			continue
		}
		fmt.Printf("  %-16s n=%-3d p50 %-9s p99 %-9s min %-9s max %s\n", s.name, len(s.d), ms(s.median()), ms(s.pct(99)), ms(s.pct(0)), ms(s.pct(100)))
	}
	fmt.Println("  otherix API create, by leg (from the agent's log):")
	printBreakdown(r.agentLog, r.creates)
}

// printSummary prints the Markdown table for BENCHMARKS.md: one column per
// round, and the ratios the targets are judged on.
func printSummary(all []roundResult, useLibvirt bool) {
	fmt.Printf("\n| path |")
	for _, r := range all {
		fmt.Printf(" round %d |", r.round)
	}
	fmt.Printf("\n|---|")
	for range all {
		fmt.Printf("---|")
	}
	fmt.Println()
	row := func(name string, get func(roundResult) string) {
		fmt.Printf("| %s |", name)
		for _, r := range all {
			fmt.Printf(" %s |", get(r))
		}
		fmt.Println()
	}
	row("host load (1/5/15 min) before", func(r roundResult) string { return r.loadBefore })
	row("floor p50", func(r roundResult) string { return ms(r.floor.median()) })
	if useLibvirt {
		row("libvirt p50", func(r roundResult) string { return ms(r.libvirt.median()) })
	}
	row("otherix API p50 · p99", func(r roundResult) string { return ms(r.api.median()) + " · " + ms(r.api.pct(99)) })
	row("otherix vm create --wait p50", func(r roundResult) string { return ms(r.cli.median()) })
	row("otherix vm list p50", func(r roundResult) string { return ms(r.oxList.median()) })
	row("otherix version p50 (process floor)", func(r roundResult) string { return ms(r.oxVersion.median()) })
	if useLibvirt {
		row("virsh list p50", func(r roundResult) string { return ms(r.virshList.median()) })
	}
	row("API p50 ÷ floor p50 (target ≤ 2)", func(r roundResult) string {
		return fmt.Sprintf("%.2f", float64(r.api.median())/float64(r.floor.median()))
	})
	if useLibvirt {
		row("libvirt p50 ÷ API p50 (target ≥ 2)", func(r roundResult) string {
			return fmt.Sprintf("%.2f", float64(r.libvirt.median())/float64(r.api.median()))
		})
	}
}
