//go:build etcd

package watch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/watch"
)

func putJSON(t *testing.T, cli *clientv3.Client, key string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := cli.Put(context.Background(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

func vmIn(id, phase string) messages.VM {
	return messages.VM{ID: id, Name: id, Owner: "u", Status: messages.VMStatus{Phase: phase}}
}

// runHub runs another hub over cli until the test ends.
func runHub(t *testing.T, cli *clientv3.Client) *watch.Hub {
	t.Helper()
	h := watch.New(cli, watch.Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h
}

func sameCounts(a, b watch.Fleet) bool {
	return maps.Equal(a.VMs, b.VMs) && maps.Equal(a.Nodes, b.Nodes) && maps.Equal(a.Tasks, b.Tasks) &&
		a.Jobs == b.Jobs && a.Claimed == b.Claimed
}

func fleetString(f watch.Fleet) string {
	return fmt.Sprintf("vms %v nodes %v tasks %v jobs %d claimed %d", f.VMs, f.Nodes, f.Tasks, f.Jobs, f.Claimed)
}

// TestFleetCounts: the hub counts what is there when it starts, then moves
// the counts with every change (a phase change, a deletion, a new row),
// ending where a fresh count of the same store ends; a state outside the
// known set is counted as "other", never as a label of its own.
func TestFleetCounts(t *testing.T) {
	h, cli := startHub(t, watch.Config{})
	for i, phase := range []string{messages.PhaseRunning, messages.PhaseRunning, messages.PhaseStopped} {
		putJSON(t, cli, store.RowKey(store.VMs, fmt.Sprint("vm", i)), vmIn(fmt.Sprint("vm", i), phase))
	}
	putJSON(t, cli, store.RowKey(store.Nodes, "n1"), messages.Node{ID: "n1", Name: "n1", Phase: messages.NodeReady})
	putJSON(t, cli, store.RowKey(store.Tasks, "t1"), messages.Task{ID: "t1", State: messages.TaskPending})
	putJSON(t, cli, store.RowKey(store.Jobs, "j1"), messages.Job{ID: "j1", TaskID: "t1"})
	// Index keys and events under the same prefixes count for nothing.
	if _, err := cli.Put(context.Background(), store.IndexKey(store.VMs, "owner/u", "vm0"), ""); err != nil {
		t.Fatal(err)
	}

	want := func(desc string, check func(watch.Fleet) bool) {
		t.Helper()
		testutil.EventuallyReport(t, 30*time.Second, 10*time.Millisecond, desc, func() (bool, string) {
			f, ok := h.Fleet()
			return ok && check(f), fleetString(f)
		})
	}
	want("the starting counts", func(f watch.Fleet) bool {
		return f.VMs[messages.PhaseRunning] == 2 && f.VMs[messages.PhaseStopped] == 1 && f.VMs[messages.PhasePending] == 0 &&
			f.Nodes[messages.NodeReady] == 1 && f.Tasks[messages.TaskPending] == 1 && f.Jobs == 1 && f.Claimed == 0 &&
			len(f.VMs) == len(watch.VMPhases)
	})

	putJSON(t, cli, store.RowKey(store.VMs, "vm0"), vmIn("vm0", messages.PhaseCrashed))
	if _, err := cli.Delete(context.Background(), store.RowKey(store.VMs, "vm2")); err != nil {
		t.Fatal(err)
	}
	putJSON(t, cli, store.RowKey(store.VMs, "weird"), vmIn("weird", "<script>"))
	putJSON(t, cli, store.RowKey(store.Nodes, "n1"), messages.Node{ID: "n1", Name: "n1", Phase: messages.NodeUnreachable})
	putJSON(t, cli, store.RowKey(store.Tasks, "t1"), messages.Task{ID: "t1", State: messages.TaskSuccess})
	if _, err := cli.Put(context.Background(), store.ClaimPrefix()+"j1", "r1"); err != nil {
		t.Fatal(err)
	}
	putJSON(t, cli, store.RowKey(store.Jobs, "j2"), messages.Job{ID: "j2"})
	if _, err := cli.Delete(context.Background(), store.RowKey(store.Jobs, "j1")); err != nil {
		t.Fatal(err)
	}
	want("the counts after the changes", func(f watch.Fleet) bool {
		return f.VMs[messages.PhaseRunning] == 1 && f.VMs[messages.PhaseCrashed] == 1 && f.VMs[messages.PhaseStopped] == 0 &&
			f.VMs[watch.OtherState] == 1 && f.VMs["<script>"] == 0 && len(f.VMs) == len(watch.VMPhases) &&
			f.Nodes[messages.NodeReady] == 0 && f.Nodes[messages.NodeUnreachable] == 1 &&
			f.Tasks[messages.TaskPending] == 0 && f.Tasks[messages.TaskSuccess] == 1 && f.Jobs == 1 && f.Claimed == 1
	})
	moved, _ := h.Fleet()
	fresh := runHub(t, cli)
	testutil.EventuallyReport(t, 30*time.Second, 10*time.Millisecond, "a fresh count equals the moved one", func() (bool, string) {
		f, ok := fresh.Fleet()
		return ok && sameCounts(f, moved), fleetString(f) + " vs " + fleetString(moved)
	})
}

// BenchmarkFleetCount measures the count a hub makes when its watch
// starts, over 10,000 VM rows (and as many tasks): the one read of those
// prefixes the fleet gauges cost per watch start.
func BenchmarkFleetCount(b *testing.B) {
	cli := storetest.New(b).Client()
	ctx := context.Background()
	for i := range 10000 {
		v := vmIn(fmt.Sprintf("vm%05d", i), messages.PhaseRunning)
		v.Spec = messages.VMSpec{Image: messages.ImageSource{URL: "https://img.example/debian-12.qcow2"}, CPUs: 2, MemoryMiB: 2048, DiskGiB: 20}
		vb, _ := json.Marshal(v)
		tb, _ := json.Marshal(messages.Task{ID: fmt.Sprintf("t%05d", i), Kind: messages.TaskVMCreate, State: messages.TaskSuccess})
		if _, err := cli.Txn(ctx).Then(clientv3.OpPut(store.RowKey(store.VMs, v.ID), string(vb)),
			clientv3.OpPut(store.RowKey(store.Tasks, fmt.Sprintf("t%05d", i)), string(tb))).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		fresh := watch.New(cli, watch.Config{}, nil)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fresh.Run(rctx)
		}()
		deadline := time.Now().Add(time.Minute)
		for {
			if f, ok := fresh.Fleet(); ok {
				if f.VMs[messages.PhaseRunning] != 10000 {
					b.Fatalf("counted %v", f.VMs)
				}
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("no count within a minute")
			}
			runtime.Gosched()
		}
		cancel()
		<-done
	}
}
