package watch

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// The fleet's counts are kept by the hub, which sees every change under the
// root anyway: the rows are counted once, at the revision the shared watch
// starts from (aside, so streams do not wait for it), and every change
// after it moves the counts (the previous row's state counted out, the new
// one's in); the sum of both is the fleet. A scrape reads a few integers;
// no request ever ranges over the VM or task prefixes. Every replica keeps
// the same counts of the whole fleet.

// Label values of the fleet counts. States are only ever these: a row with
// any other (a corrupt row, a state a newer control plane invented) is
// counted as OtherState, so no writer can grow the label set.
var (
	VMPhases = []string{messages.PhasePending, messages.PhaseCreating, messages.PhaseRunning,
		messages.PhaseStopped, messages.PhasePaused, messages.PhaseDeleting, messages.PhaseFailed,
		messages.PhaseCrashed, messages.PhaseUnknown, OtherState}
	NodeStates = []string{messages.NodePending, messages.NodeReady, messages.NodeUnreachable,
		messages.NodeGone, OtherState}
	TaskStates = []string{messages.TaskPending, messages.TaskRunning, messages.TaskSuccess,
		messages.TaskFailed, messages.TaskCancelled, OtherState}
)

// OtherState counts rows whose state is not one of the known ones.
const OtherState = "other"

// Fleet is the fleet's counts at one moment.
type Fleet struct {
	// VMs, Nodes and Tasks count rows by phase or state; every known label
	// value is present, zero or not.
	VMs, Nodes, Tasks map[string]int64
	// Jobs is the job queue's depth (job rows: waiting, backing off or
	// claimed); Claimed how many of them a dispatcher holds.
	Jobs, Claimed int64
	// Revision is the etcd revision the counts are at.
	Revision int64
}

// counts is the hub's running tally; guarded by Hub.fmu.
type counts struct {
	vms, nodes, tasks map[string]int64
	jobs, claimed     int64
	rev               int64
	ready             bool
}

func newCounts() counts {
	return counts{vms: map[string]int64{}, nodes: map[string]int64{}, tasks: map[string]int64{}}
}

// fleetKind is what a key counts as, if anything.
type fleetKind int

const (
	notCounted fleetKind = iota
	countVM
	countNode
	countTask
	countJob
	countClaim
)

func fleetKindOf(key string) fleetKind {
	switch {
	case isRow(key, store.RowPrefix(store.VMs)):
		return countVM
	case isRow(key, store.RowPrefix(store.Nodes)):
		return countNode
	case isRow(key, store.RowPrefix(store.Tasks)):
		return countTask
	case isRow(key, store.RowPrefix(store.Jobs)):
		return countJob
	case isRow(key, store.ClaimPrefix()):
		return countClaim
	}
	return notCounted
}

// isRow reports a key directly under prefix (a row, not an index key).
func isRow(key, prefix string) bool {
	rest, ok := strings.CutPrefix(key, prefix)
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// stateOf reads the phase or state a counted row is in, bounded to the
// known label values.
func stateOf(k fleetKind, value []byte) string {
	var known []string
	var s string
	switch k {
	case countVM:
		var v struct {
			Status struct {
				Phase string `json:"phase"`
			} `json:"status"`
		}
		_ = json.Unmarshal(value, &v)
		s, known = v.Status.Phase, VMPhases
	case countNode:
		var v struct {
			Phase string `json:"phase"`
		}
		_ = json.Unmarshal(value, &v)
		s, known = v.Phase, NodeStates
	case countTask:
		var v struct {
			State string `json:"state"`
		}
		_ = json.Unmarshal(value, &v)
		s, known = v.State, TaskStates
	default:
		return ""
	}
	for _, x := range known {
		if x == s && x != OtherState {
			return s
		}
	}
	return OtherState
}

// add counts one row in (d = 1) or out (d = -1).
func (c *counts) add(k fleetKind, value []byte, d int64) {
	switch k {
	case countVM:
		c.vms[stateOf(k, value)] += d
	case countNode:
		c.nodes[stateOf(k, value)] += d
	case countTask:
		c.tasks[stateOf(k, value)] += d
	case countJob:
		c.jobs += d
	case countClaim:
		c.claimed += d
	}
}

// apply moves the counts by one change.
func (c *counts) apply(ev *clientv3.Event) {
	k := fleetKindOf(string(ev.Kv.Key))
	if k == notCounted {
		return
	}
	// The hub's watch asks for previous values. Should etcd have none to
	// give (a change it had already compacted, which the shared watch
	// never asks for), the old state cannot be counted out; the next
	// recount, at the watch's next start, corrects it.
	if ev.PrevKv != nil {
		c.add(k, ev.PrevKv.Value, -1)
	}
	if ev.Type == mvccpb.PUT {
		c.add(k, ev.Kv.Value, 1)
	}
}

// countPages is how many rows one read of the initial count takes.
const countPages = 500

// countAt reads the fleet's counts at revision rev, page by page; the
// result is marked ready, for merge.
func countAt(ctx context.Context, cli *clientv3.Client, rev int64) (counts, error) {
	c := newCounts()
	c.rev = rev
	for _, prefix := range []string{store.RowPrefix(store.VMs), store.RowPrefix(store.Nodes), store.RowPrefix(store.Tasks),
		store.RowPrefix(store.Jobs), store.ClaimPrefix()} {
		from, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(countPages),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			k := fleetKindOf(prefix + "x")
			if k == countJob || k == countClaim {
				opts = append(opts, clientv3.WithKeysOnly())
			}
			resp, err := cli.Get(ctx, from, opts...)
			if err != nil {
				return counts{}, fmt.Errorf("watch: count %s at %d: %w", prefix, rev, err)
			}
			for _, kv := range resp.Kvs {
				if kk := fleetKindOf(string(kv.Key)); kk != notCounted {
					c.add(kk, kv.Value, 1)
				}
			}
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	c.ready = true
	return c, nil
}

// countBase reads the counts at rev and adds them to the changes the
// watch has counted since, retrying until it succeeds or ctx ends.
func (h *Hub) countBase(ctx context.Context, rev int64) {
	for {
		base, err := countAt(ctx, h.cli, rev)
		if err == nil {
			h.fmu.Lock()
			h.counts.merge(base)
			h.fmu.Unlock()
			return
		}
		h.log.Warn("watch hub: count the fleet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// merge adds base, the counts at the watch's start revision, to the
// changes counted since; the sum is the fleet now.
func (c *counts) merge(base counts) {
	for _, m := range []struct{ to, from map[string]int64 }{{c.vms, base.vms}, {c.nodes, base.nodes}, {c.tasks, base.tasks}} {
		for k, v := range m.from {
			m.to[k] += v
		}
	}
	c.jobs += base.jobs
	c.claimed += base.claimed
	c.rev = max(c.rev, base.rev)
	c.ready = true
}

// Fleet returns the fleet's counts; ok is false until the hub has counted
// once.
func (h *Hub) Fleet() (Fleet, bool) {
	h.fmu.Lock()
	defer h.fmu.Unlock()
	c := h.counts
	if !c.ready {
		return Fleet{}, false
	}
	f := Fleet{VMs: fill(c.vms, VMPhases), Nodes: fill(c.nodes, NodeStates), Tasks: fill(c.tasks, TaskStates),
		Jobs: c.jobs, Claimed: c.claimed, Revision: c.rev}
	return f, true
}

// fill copies m with every label value present.
func fill(m map[string]int64, labels []string) map[string]int64 {
	out := make(map[string]int64, len(labels))
	for _, l := range labels {
		out[l] = m[l]
	}
	return out
}
