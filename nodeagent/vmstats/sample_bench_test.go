package vmstats_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/qemu"
	"github.com/otherix/otherix/nodeagent/vmstats"
)

// BenchmarkSampleRealQEMU is the cost of one VM sample as the agent takes it
// (nodeagent/vmactor, Manager.sample): query-cpus-fast, the vCPU threads'
// /proc stat, the process's /proc status, query-blockstats and one
// network device's /sys counters, on a real QEMU (TCG, two vCPUs, two
// drives, stopped before its firmware: the queries cost the same whatever
// the guest does). The balloon query is left out: the agent asks it once
// per QEMU and never again once QEMU says there is none.
//
//	go test -run '^$' -bench SampleRealQEMU -benchtime 200x ./nodeagent/vmstats/
func BenchmarkSampleRealQEMU(b *testing.B) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Skip("qemu-system-x86_64 not installed")
	}
	dir := b.TempDir()
	var drives []string
	for _, name := range []string{"disk0", "seed0"} {
		f := filepath.Join(dir, name+".raw")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Truncate(f, 16<<20); err != nil {
			b.Fatal(err)
		}
		drives = append(drives, "-blockdev", "driver=file,filename="+f+",node-name="+name,
			"-device", "virtio-blk-pci,drive="+name)
	}
	qmp := filepath.Join(dir, "qmp.sock")
	args := append([]string{"-machine", "q35,accel=tcg", "-smp", "2", "-m", "128", "-nodefaults", "-no-user-config",
		"-display", "none", "-S", "-name", "guest=bench,debug-threads=on", "-qmp", "unix:" + qmp + ",server=on,wait=off"}, drives...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill() // the QEMU this benchmark started, by its pid
		_ = cmd.Wait()
	})
	ctx := context.Background()
	var mon *qemu.Monitor
	deadline := time.Now().Add(30 * time.Second)
	for {
		if mon, err = qemu.Dial(ctx, qmp); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("QMP: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer mon.Close()
	r, err := vmstats.Host()
	if err != nil {
		b.Fatal(err)
	}
	pid := cmd.Process.Pid
	sample := func() messages.VMMetrics {
		cpus, err := mon.VCPUs(ctx)
		if err != nil {
			b.Fatal(err)
		}
		tids := make([]int, 0, len(cpus))
		for _, c := range cpus {
			tids = append(tids, c.ThreadID)
		}
		cpu, err := r.ThreadsCPUSeconds(pid, tids)
		if err != nil {
			b.Fatal(err)
		}
		rss, err := r.RSSBytes(pid)
		if err != nil {
			b.Fatal(err)
		}
		blocks, err := mon.BlockStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		m := messages.VMMetrics{VCPUs: len(cpus), CPUSeconds: cpu, RSSBytes: rss}
		for _, bs := range blocks {
			m.Drives = append(m.Drives, messages.DriveMetrics{Device: bs.NodeName, ReadBytes: bs.Stats.ReadBytes})
		}
		c, err := r.Tap("lo")
		if err != nil {
			b.Fatal(err)
		}
		m.NICs = append(m.NICs, vmstats.GuestNIC("lo", c))
		return m
	}
	if m := sample(); m.VCPUs != 2 || len(m.Drives) != 2 || m.RSSBytes == 0 {
		b.Fatalf("a sample of the benchmark's QEMU: %+v", m)
	}
	b.ResetTimer()
	for range b.N {
		sample()
	}
}
