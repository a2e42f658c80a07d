//go:build etcd

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/vmactor"
	"github.com/otherix/otherix/persistence/storetest"
)

// actorsN is how many VM actors each memory measurement spawns.
const actorsN = 1000

// targetBytes is issue #5's bound on memory per VM actor.
const targetBytes = 20 << 10

// heap is the live heap plus goroutine stacks after two full collections:
// an actor that kept a goroutine would show in the stacks, not the heap.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// TestMemoryPerControlPlaneVMActor creates actorsN VMs through one gateway,
// closes it, and starts a second one on the same etcd (no actor alive, jobs
// not dispatched). It then spawns one VM actor per VM with GetVM and reports
// the live-heap delta over actorsN: the actor, its mailbox, its loaded VM
// and its registry entry.
func TestMemoryPerControlPlaneVMActor(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	log := slog.New(slog.DiscardHandler)
	g1, err := gateway.Start(ctx, st, gateway.Config{NoDispatch: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, actorsN)
	for i := range ids {
		vm, _, err := g1.CreateVM(ctx, "u1", messages.CreateVMRequest{Name: fmt.Sprintf("vm-%d", i),
			Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian-12.qcow2"}}})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = vm.ID
	}
	g1.Close()

	g2, err := gateway.Start(ctx, st, gateway.Config{NoDispatch: true, PassivateAfter: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)
	// One actor first, so code paths and pools are warm before the baseline.
	if _, err := g2.GetVM(ctx, "", ids[0]); err != nil {
		t.Fatal(err)
	}
	before := heap()
	for _, id := range ids[1:] {
		if _, err := g2.GetVM(ctx, "", id); err != nil {
			t.Fatal(err)
		}
	}
	after := heap()
	report(t, "control plane", before, after, actorsN-1)
}

// TestMemoryPerAgentVMActor writes actorsN state dirs of stopped VMs and has
// a vmactor.Manager recover them: one actor per VM, its record loaded and
// its serial log open. It reports the live-heap delta over actorsN.
func TestMemoryPerAgentVMActor(t *testing.T) {
	root := t.TempDir()
	state, run, disks := filepath.Join(root, "vms"), filepath.Join(root, "run"), filepath.Join(root, "disks")
	cache, err := images.New("default", filepath.Join(root, "images"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	now := time.Now().UTC()
	for i := 0; i < actorsN; i++ {
		id := messages.NewID()
		rec := map[string]any{"id": id, "name": fmt.Sprintf("vm-%d", i), "generation": 1,
			"spec": messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian-12.qcow2"},
				CPUs: 1, MemoryMiB: 512, DiskGiB: 10, PowerState: messages.PowerStopped, Arch: messages.ArchAMD64},
			"phase": messages.PhaseStopped, "disk": filepath.Join(disks, id+".qcow2"), "created_at": now}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(state, id), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, id, "vm.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := vmactor.New(vmactor.Config{StateDir: state, RunDir: run, DiskDir: disks, Images: cache, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	before := heap()
	if err := m.Recover(); err != nil {
		t.Fatal(err)
	}
	if !testutil.Until(time.Minute, 10*time.Millisecond, func() bool { return len(m.VMs()) >= actorsN }) {
		t.Fatalf("%d of %d VMs loaded after a minute", len(m.VMs()), actorsN)
	}
	after := heap()
	report(t, "agent", before, after, actorsN)
}

func report(t *testing.T, side string, before, after uint64, n int) {
	t.Helper()
	per := (float64(after) - float64(before)) / float64(n)
	t.Logf("%s: %d VM actors, live heap + stacks %.1f → %.1f MiB, %.1f KiB per VM actor (target < %d KiB)",
		side, n, float64(before)/(1<<20), float64(after)/(1<<20), per/1024, targetBytes>>10)
	if per >= targetBytes {
		t.Errorf("%s: %.1f KiB per VM actor, over the %d KiB target", side, per/1024, targetBytes>>10)
	}
}
