package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/otherix/otherix/nodeagent/cloudinit"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/qemu"

	"github.com/otherix/otherix/internal/atomicfile"
)

// agentSteps times, n times, the steps the agent's create runs, with the
// agent's own packages in this process: a cached images.Ensure, the
// overlay, the NoCloud seed, three atomic state-file writes (the agent
// saves vm.json as creating, stopped, running), qemu.Start, the QMP
// handshake, the serial socket connect, then cont and query-status. It
// attributes the agent's time above the floor; it is not a path of its own.
func agentSteps(dir, base string, shape vmShape, n int) ([]*series, error) {
	ctx := context.Background()
	pool := filepath.Join(dir, "pool")
	// The base is served once over loopback (allowed here, as an agent
	// would with --image-allow) and normalised into the cache; the timed
	// Ensure below is the cached path.
	cache, err := images.New("default", filepath.Join(pool, "images"),
		images.Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		return nil, err
	}
	defer cache.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, base)
	}))
	defer srv.Close()
	names := []string{"ensure (cached)", "overlay", "seed ISO", "3 × state write", "qemu start", "qmp handshake", "serial connect", "cont + status"}
	out := make([]*series, len(names))
	for i, nm := range names {
		out[i] = &series{name: nm}
	}
	url := srv.URL + "/images/bench.qcow2"
	if _, err := cache.Ensure(ctx, url, "", nil); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("steps-%d", i)
		run := filepath.Join(dir, "r", strconv.Itoa(i))
		state := filepath.Join(dir, "s", strconv.Itoa(i))
		for _, d := range []string{run, state, filepath.Join(pool, "vms")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
		}
		disk := filepath.Join(pool, "vms", id+".qcow2")
		seed := filepath.Join(pool, "vms", id+"-seed.iso")
		var t [9]time.Time
		t[0] = time.Now()
		img, err := cache.Ensure(ctx, url, "", nil)
		if err != nil {
			return nil, err
		}
		t[1] = time.Now()
		if err := images.CreateVMDisk(ctx, img, disk, shape.DiskBytes); err != nil {
			return nil, err
		}
		t[2] = time.Now()
		if err := cloudinit.Write(seed, cloudinit.Seed{InstanceID: id, Hostname: id}); err != nil {
			return nil, err
		}
		t[3] = time.Now()
		for range 3 {
			if err := atomicfile.Write(filepath.Join(state, "vm.json"), make([]byte, 600), 0o600); err != nil {
				return nil, err
			}
		}
		t[4] = time.Now()
		proc, err := qemu.Start(ctx, qemu.Spec{ID: id, Accel: shape.Accel, CPUs: shape.CPUs, MemoryMiB: shape.MemoryMiB,
			Disk: disk, Seed: seed, RunDir: run, Sandbox: true})
		if err != nil {
			return nil, err
		}
		t[5] = time.Now()
		mon, err := qemu.Dial(ctx, qemu.QMPPath(run))
		if err != nil {
			_ = proc.Kill()
			return nil, err
		}
		t[6] = time.Now()
		serial, err := net.Dial("unix", qemu.SerialPath(run))
		if err != nil {
			_ = proc.Kill()
			return nil, err
		}
		t[7] = time.Now()
		err = mon.Cont(ctx)
		if err == nil {
			_, err = mon.Status(ctx)
		}
		t[8] = time.Now()
		for k := range out {
			out[k].add(t[k+1].Sub(t[k]))
		}
		serial.Close()
		mon.Close()
		_ = proc.Kill()
		select {
		case <-proc.Exited():
		case <-time.After(5 * time.Second):
		}
		proc.Close()
		os.RemoveAll(run)
		os.RemoveAll(state)
		os.Remove(disk)
		os.Remove(seed)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
