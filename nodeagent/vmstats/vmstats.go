// Package vmstats reads what the host knows of a running VM: the CPU time
// of QEMU's vCPU threads and the resident memory of its process from /proc,
// and its taps' counters from /sys/class/net. It also turns two samples
// into rates. The VM actor asks QEMU itself (over QMP) for the rest.
package vmstats

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"

	"github.com/otherix/otherix/messages"
)

// Reader reads /proc and /sys/class/net below the roots it was made with,
// so tests read fixtures. Its methods are safe for concurrent use.
type Reader struct {
	proc procfs.FS
	net  string
}

// NewReader reads procRoot (normally /proc) and sysClassNet (normally
// /sys/class/net).
func NewReader(procRoot, sysClassNet string) (*Reader, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("vmstats: %w", err)
	}
	return &Reader{proc: fs, net: sysClassNet}, nil
}

// Host reads the host's own /proc and /sys/class/net.
func Host() (*Reader, error) { return NewReader(procfs.DefaultMountPoint, "/sys/class/net") }

// ThreadsCPUSeconds sums the user and system time of threads tids of
// process pid (QEMU's vCPU threads, from query-cpus-fast). A thread that
// is gone fails the read: a vCPU thread lives as long as QEMU.
func (r *Reader) ThreadsCPUSeconds(pid int, tids []int) (float64, error) {
	var sum float64
	for _, tid := range tids {
		t, err := r.proc.Thread(pid, tid)
		if err != nil {
			return 0, fmt.Errorf("vmstats: thread %d of %d: %w", tid, pid, err)
		}
		st, err := t.Stat()
		if err != nil {
			return 0, fmt.Errorf("vmstats: thread %d of %d: %w", tid, pid, err)
		}
		sum += st.CPUTime()
	}
	return sum, nil
}

// RSSBytes is process pid's resident memory (VmRSS of /proc/PID/status).
func (r *Reader) RSSBytes(pid int) (int64, error) {
	p, err := r.proc.Proc(pid)
	if err != nil {
		return 0, fmt.Errorf("vmstats: process %d: %w", pid, err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, fmt.Errorf("vmstats: process %d: %w", pid, err)
	}
	return int64(st.VmRSS), nil
}

// TapCounters are a tap's counters as the host counts them: the host's RX
// is what the guest sent.
type TapCounters struct {
	RXBytes, TXBytes, RXPackets, TXPackets int64
}

// ErrNoDevice is Tap's error for a device that does not exist.
var ErrNoDevice = errors.New("vmstats: no such network device")

// Tap reads the counters of network device name.
func (r *Reader) Tap(name string) (TapCounters, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return TapCounters{}, fmt.Errorf("vmstats: bad device name %q", name)
	}
	dir := filepath.Join(r.net, name, "statistics")
	var c TapCounters
	for _, f := range []struct {
		name string
		into *int64
	}{{"rx_bytes", &c.RXBytes}, {"tx_bytes", &c.TXBytes}, {"rx_packets", &c.RXPackets}, {"tx_packets", &c.TXPackets}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if errors.Is(err, os.ErrNotExist) {
			return TapCounters{}, fmt.Errorf("%w: %s", ErrNoDevice, name)
		}
		if err != nil {
			return TapCounters{}, fmt.Errorf("vmstats: %w", err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v < 0 {
			return TapCounters{}, fmt.Errorf("vmstats: %s of %s: not a counter: %q", f.name, name, strings.TrimSpace(string(b)))
		}
		*f.into = v
	}
	return c, nil
}

// GuestNIC is a tap's counters told from the guest's side.
func GuestNIC(device string, c TapCounters) messages.NICMetrics {
	return messages.NICMetrics{Device: device, RXBytes: c.TXBytes, TXBytes: c.RXBytes,
		RXPackets: c.TXPackets, TXPackets: c.RXPackets}
}

// WithRates fills cur's rates from prev, an earlier sample of the same QEMU
// process (the caller checks that). Without prev, or when the clock did
// not advance, cur has no rates. A counter that went down (a drive
// re-created, a tap re-made) gives a rate of 0, never a negative one.
func WithRates(prev *messages.VMMetrics, cur messages.VMMetrics) messages.VMMetrics {
	cur.WindowSeconds, cur.CPUPercent = 0, 0
	if prev == nil {
		return cur
	}
	w := cur.SampledAt.Sub(prev.SampledAt).Seconds()
	if w <= 0 {
		return cur
	}
	cur.WindowSeconds = w
	rate := func(now, before float64) float64 {
		if now < before {
			return 0
		}
		return (now - before) / w
	}
	cur.CPUPercent = 100 * rate(cur.CPUSeconds, prev.CPUSeconds)
	drives := make(map[string]messages.DriveMetrics, len(prev.Drives))
	for _, d := range prev.Drives {
		drives[d.Device] = d
	}
	for i, d := range cur.Drives {
		p, ok := drives[d.Device]
		if !ok {
			continue
		}
		d.ReadBytesPerSec = rate(float64(d.ReadBytes), float64(p.ReadBytes))
		d.WriteBytesPerSec = rate(float64(d.WriteBytes), float64(p.WriteBytes))
		d.ReadOpsPerSec = rate(float64(d.ReadOps), float64(p.ReadOps))
		d.WriteOpsPerSec = rate(float64(d.WriteOps), float64(p.WriteOps))
		cur.Drives[i] = d
	}
	nics := make(map[string]messages.NICMetrics, len(prev.NICs))
	for _, n := range prev.NICs {
		nics[n.Device] = n
	}
	for i, n := range cur.NICs {
		p, ok := nics[n.Device]
		if !ok {
			continue
		}
		n.RXBytesPerSec = rate(float64(n.RXBytes), float64(p.RXBytes))
		n.TXBytesPerSec = rate(float64(n.TXBytes), float64(p.TXBytes))
		cur.NICs[i] = n
	}
	return cur
}
