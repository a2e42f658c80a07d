//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/test/linearize"
)

// TestLinearizableUnderKills: concurrent clients create, update, stop,
// delete, get and list VMs of a few names, each request to a random
// replica, while replicas are killed with SIGKILL (the leader every other
// time) and restarted one at a time. The history, with every request whose
// outcome is unknown recorded as pending, must be linearizable against the
// model of the VM registry (test/linearize). 60 s here; make chaos runs it
// for CHAOS_DURATION. A failure names porcupine's visualization.
func TestLinearizableUnderKills(t *testing.T) {
	run := chaosDuration(t, 60*time.Second)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %s of load", seed, run)
	c := startChaosCluster(t)
	names := []string{"lin-a", "lin-b", "lin-c", "lin-d", "lin-e"}
	h := linearize.NewHistory()

	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	const clients = 4
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := &linClient{c: c, id: i, h: h, names: names, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
			for ctx.Err() == nil {
				lc.one(ctx)
			}
		}()
	}
	// The nemesis: kill one replica, the leader every other time, restart
	// it, wait until it serves, and again; one down at most, so the two
	// others keep quorum.
	rng := rand.New(rand.NewPCG(seed, 99))
	kills := 0
	for ctx.Err() == nil {
		pause(ctx, time.Duration(1500+rng.IntN(2500))*time.Millisecond)
		if ctx.Err() != nil {
			break
		}
		victim := c.waitLeader()
		if kills%2 == 1 {
			victim = c.follower(rng)
		}
		victim.kill9()
		kills++
		pause(context.Background(), time.Duration(300+rng.IntN(1500))*time.Millisecond)
		c.restart(victim)
	}
	wg.Wait()
	// Last, every replica is read for every name: they must agree with the
	// history too.
	c.waitAllReady("every replica back")
	final := &linClient{c: c, id: clients, h: h, names: names, rng: rng}
	for _, r := range c.rs {
		for _, n := range names {
			final.get(context.Background(), r, n)
		}
	}

	counts := h.Counts()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	summary := ""
	for _, k := range keys {
		summary += fmt.Sprintf(" %s=%d", k, counts[k])
	}
	t.Logf("%d kills; operations:%s", kills, summary)
	if kills == 0 {
		t.Fatal("no replica was killed: the run was too short")
	}
	if counts["create ok"] == 0 || counts["update ok"] == 0 || counts["delete ok"] == 0 || counts["get ok"] == 0 {
		t.Fatalf("too few operations succeeded to check anything:%s", summary)
	}
	dir, err := os.MkdirTemp("", "otherix-linearizability-")
	if err != nil {
		t.Fatal(err)
	}
	if err := linearize.Check(h.Operations(), 5*time.Minute+2*run, dir); err != nil {
		t.Fatalf("%v (seed %d)", err, seed)
	}
	os.RemoveAll(dir)
}

// linClient is one client of the linearizability test: it records each
// operation in the history as it saw it.
type linClient struct {
	c     *chaosCluster
	id    int
	h     *linearize.History
	names []string
	rng   *rand.Rand
}

// one sends one random operation to a random replica.
func (l *linClient) one(ctx context.Context) {
	r := l.c.rs[l.rng.IntN(len(l.c.rs))]
	name := l.names[l.rng.IntN(len(l.names))]
	switch p := l.rng.IntN(100); {
	case p < 25:
		l.create(ctx, r, name)
	case p < 45:
		l.update(ctx, r, name, 1+l.rng.IntN(4))
	case p < 55:
		l.stop(ctx, r, name)
	case p < 70:
		l.delete(ctx, r, name)
	case p < 90:
		l.get(ctx, r, name)
	default:
		l.list(ctx, r)
	}
}

// record adds an operation unless its answer proves it did nothing (then
// it is as if it was never sent). Any answer not listed in known is an
// unknown outcome.
func (l *linClient) record(in linearize.Input, call int64, status int, code string, err error, out linearize.Output) {
	ret := l.h.Now()
	if notDelivered(status, code, err) {
		return
	}
	if err != nil || status >= 500 {
		out = linearize.Output{Result: linearize.Unknown}
	}
	l.h.Add(l.id, in, call, out, ret)
}

// writeCtx bounds a write's request: past it the outcome is unknown.
func writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

func (l *linClient) create(ctx context.Context, r *replica, name string) {
	in := linearize.Input{Op: linearize.Create, Name: name}
	rctx, cancel := writeCtx(ctx)
	defer cancel()
	var a acceptedVM
	call := l.h.Now()
	st, code, err := l.c.do(rctx, r, "POST", "/v1/vms", vmBody(name), nil, &a)
	out := linearize.Output{Result: linearize.Unknown}
	switch {
	case err != nil:
	case st == http.StatusAccepted:
		out = linearize.Output{Result: linearize.OK, ID: a.VM.ID, CPUs: a.VM.Spec.CPUs}
	case st == http.StatusConflict && code == "vm_name_conflict":
		out = linearize.Output{Result: linearize.Exists}
	case st < 500:
		l.c.t.Errorf("create %s via %s: %d %s", name, r.name, st, code)
		return
	}
	l.record(in, call, st, code, err, out)
}

func (l *linClient) update(ctx context.Context, r *replica, name string, cpus int) {
	in := linearize.Input{Op: linearize.Update, Name: name, CPUs: cpus}
	rctx, cancel := writeCtx(ctx)
	defer cancel()
	var vm vmAnswer
	call := l.h.Now()
	st, code, err := l.c.do(rctx, r, "PATCH", "/v1/vms/"+name, map[string]any{"spec": map[string]any{"cpus": cpus}}, nil, &vm)
	out := linearize.Output{Result: linearize.Unknown}
	switch {
	case err != nil:
	case st == http.StatusOK:
		out = linearize.Output{Result: linearize.OK, ID: vm.ID, CPUs: vm.Spec.CPUs}
	case st == http.StatusNotFound:
		out = linearize.Output{Result: linearize.Missing}
	case st == http.StatusConflict || st == http.StatusPreconditionFailed:
		out = linearize.Output{Result: linearize.Busy}
	case st < 500:
		l.c.t.Errorf("update %s via %s: %d %s", name, r.name, st, code)
		return
	}
	l.record(in, call, st, code, err, out)
}

// task answers a 202 of a task on a VM, or the refusal.
func (l *linClient) task(ctx context.Context, r *replica, method, path string) (call int64, st int, code string, err error, tk task) {
	rctx, cancel := writeCtx(ctx)
	defer cancel()
	var a acceptedVM
	call = l.h.Now()
	st, code, err = l.c.do(rctx, r, method, path, nil, nil, &a)
	return call, st, code, err, a.Task
}

// taskOutcome maps a task request's refusal.
func taskRefusal(st int, code string) (string, bool) {
	switch {
	case st == http.StatusNotFound:
		return linearize.Missing, true
	case st == http.StatusConflict && code == "vm_busy":
		return linearize.Busy, true
	}
	return "", false
}

func (l *linClient) stop(ctx context.Context, r *replica, name string) {
	in := linearize.Input{Op: linearize.Stop, Name: name}
	call, st, code, err, _ := l.task(ctx, r, "POST", "/v1/vms/"+name+"/stop")
	out := linearize.Output{Result: linearize.Unknown}
	if err == nil && st == http.StatusAccepted {
		out.Result = linearize.OK
	} else if res, ok := taskRefusal(st, code); err == nil && ok {
		out.Result = res
	} else if err == nil && st < 500 {
		l.c.t.Errorf("stop %s via %s: %d %s", name, r.name, st, code)
		return
	}
	l.record(in, call, st, code, err, out)
}

// delete is recorded from its request until its task is seen to end: the
// row goes in the transaction that ends the task.
func (l *linClient) delete(ctx context.Context, r *replica, name string) {
	in := linearize.Input{Op: linearize.Delete, Name: name}
	call, st, code, err, tk := l.task(ctx, r, "DELETE", "/v1/vms/"+name)
	out := linearize.Output{Result: linearize.Unknown}
	switch res, refused := taskRefusal(st, code); {
	case err != nil:
	case st == http.StatusAccepted:
		switch l.c.waitTaskEnd(tk.ID, 60*time.Second, l.rng) {
		case "success":
			out.Result = linearize.OK
		case "failed", "cancelled":
			out.Result = linearize.Failed
		}
		// Not seen to end: unknown; recorded as pending whatever the 202.
		l.h.Add(l.id, in, call, out, l.h.Now())
		return
	case refused:
		out.Result = res
	case st < 500:
		l.c.t.Errorf("delete %s via %s: %d %s", name, r.name, st, code)
		return
	}
	l.record(in, call, st, code, err, out)
}

// get records a read only when it was answered: a read without an answer
// changed nothing.
func (l *linClient) get(ctx context.Context, r *replica, name string) {
	rctx, cancel := writeCtx(ctx)
	defer cancel()
	var vm vmAnswer
	call := l.h.Now()
	st, code, err := l.c.do(rctx, r, "GET", "/v1/vms/"+name, nil, nil, &vm)
	ret := l.h.Now()
	in := linearize.Input{Op: linearize.Get, Name: name}
	switch {
	case err != nil || st >= 500:
	case st == http.StatusOK:
		l.h.Add(l.id, in, call, linearize.Output{Result: linearize.OK, ID: vm.ID, CPUs: vm.Spec.CPUs}, ret)
	case st == http.StatusNotFound:
		l.h.Add(l.id, in, call, linearize.Output{Result: linearize.Missing}, ret)
	default:
		l.c.t.Errorf("get %s via %s: %d %s", name, r.name, st, code)
	}
}

func (l *linClient) list(ctx context.Context, r *replica) {
	rctx, cancel := writeCtx(ctx)
	defer cancel()
	var page struct {
		Items      []vmAnswer `json:"items"`
		NextCursor string     `json:"next_cursor"`
	}
	call := l.h.Now()
	st, code, err := l.c.do(rctx, r, "GET", "/v1/vms?limit=200", nil, nil, &page)
	ret := l.h.Now()
	switch {
	case err != nil || st >= 500:
		return
	case st != http.StatusOK || page.NextCursor != "":
		l.c.t.Errorf("list via %s: %d %s, next cursor %q", r.name, st, code, page.NextCursor)
		return
	}
	vms := map[string]linearize.Output{}
	for _, vm := range page.Items {
		vms[vm.Name] = linearize.Output{Result: linearize.OK, ID: vm.ID, CPUs: vm.Spec.CPUs}
	}
	l.h.AddList(l.id, l.names, call, vms, ret)
}
