package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"
)

// apiCreate is one timed POST /v1/vms: when it was sent and when the long
// poll saw its task succeed.
type apiCreate struct {
	vmID       string
	sent, done time.Time
}

// breakdown splits API creates into three legs using the agent's log lines
// "task accepted … kind=vm.create vm=ID" and "task done … kind=vm.create":
// control plane until the agent has the task, the agent's own work, and
// control plane from the agent's end to the client seeing success. The
// agent logs with millisecond timestamps, so each leg is ±1 ms.
func breakdown(agentLog string, creates []apiCreate) (before, agent, after *series, err error) {
	f, err := os.Open(agentLog)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	accepted, finished := map[string]time.Time{}, map[string]time.Time{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "kind=vm.create") {
			continue
		}
		var at time.Time
		var vm string
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "time="); ok {
				at, _ = time.Parse(time.RFC3339Nano, v)
			}
			if v, ok := strings.CutPrefix(field, "vm="); ok {
				vm = v
			}
		}
		switch {
		case strings.Contains(line, `msg="task accepted"`):
			accepted[vm] = at
		case strings.Contains(line, `msg="task done"`):
			finished[vm] = at
		}
	}
	before, agent, after = &series{name: "API → agent has task"}, &series{name: "agent task"}, &series{name: "agent done → client"}
	for _, c := range creates {
		a, ok1 := accepted[c.vmID]
		d, ok2 := finished[c.vmID]
		if !ok1 || !ok2 {
			continue
		}
		before.add(a.Sub(c.sent))
		agent.add(d.Sub(a))
		after.add(c.done.Sub(d))
	}
	return before, agent, after, sc.Err()
}

func printBreakdown(agentLog string, creates []apiCreate) {
	b, a, c, err := breakdown(agentLog, creates)
	if err != nil {
		fmt.Println("  breakdown:", err)
		return
	}
	for _, s := range []*series{b, a, c} {
		fmt.Printf("  %-22s n=%-3d p50 %-9s p99 %s\n", s.name, len(s.d), ms(s.median()), ms(s.pct(99)))
	}
}
