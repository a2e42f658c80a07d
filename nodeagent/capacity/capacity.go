// Package capacity probes what this host offers to VMs: CPUs, memory,
// whether KVM is usable and which QEMU binaries are installed. The result
// goes into every heartbeat (messages.NodeCapacity, Heartbeat.QEMUVersions).
package capacity

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
)

// Accelerator choices of otherix-agent serve --accel.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// Reasons reported in NodeCapacity.KVMReason.
const (
	ReasonUnverified = "kvm present but not verified to boot guests (use --accel kvm to force)"
	ReasonForcedTCG  = "tcg forced by --accel tcg"
	ReasonForcedKVM  = "kvm forced by --accel kvm"
)

// QEMUBinaries are the emulators QEMUVersions asks for their version.
var QEMUBinaries = []string{"qemu-system-x86_64", "qemu-system-aarch64"}

// ExecTimeout bounds each `qemu-system-* --version`.
const ExecTimeout = 2 * time.Second

// Prober probes the host. Its fields are seams for tests; the zero value
// probes the real host.
type Prober struct {
	// MeminfoPath is /proc/meminfo unless set.
	MeminfoPath string
	// KVMPath is /dev/kvm unless set.
	KVMPath string
	// NumCPU is runtime.NumCPU unless set.
	NumCPU func() int
	// OpenKVM opens the KVM device read-write; nil means os.OpenFile.
	OpenKVM func(path string) error
	// LookPath finds a binary on PATH; nil means exec.LookPath.
	LookPath func(name string) (string, error)
	// Run runs a binary with args and returns its standard output; nil
	// means exec.CommandContext(...).Output().
	Run func(ctx context.Context, path string, args ...string) ([]byte, error)
	// KVMBoots boots the long-mode probe under KVM and under TCG (see
	// BootProbe) and reports both times; nil means the real probe with
	// qemu-system-x86_64 on amd64 hosts.
	KVMBoots func(ctx context.Context) (kvm, tcg time.Duration, err error)
}

// Probe probes the real host; see Prober.Probe.
func Probe(accel string) (messages.NodeCapacity, error) { return (&Prober{}).Probe(accel) }

// QEMUVersions asks the real host; see Prober.QEMUVersions.
func QEMUVersions(ctx context.Context) []string { return (&Prober{}).QEMUVersions(ctx) }

// ValidAccel reports whether accel is auto, kvm or tcg.
func ValidAccel(accel string) bool {
	return accel == AccelAuto || accel == AccelKVM || accel == AccelTCG
}

// Probe reports the host's capacity for the accelerator choice accel.
//
//   - "auto": a /dev/kvm that opens is not trusted on its own (a nested host
//     may have one that starts QEMU but cannot boot guests): KVM is used only
//     if a small long-mode payload boots under it (BootProbe); otherwise tcg,
//     with the reason.
//   - "kvm": KVM must open read-write, else an error; accelerator kvm.
//   - "tcg": accelerator tcg whatever /dev/kvm says.
//
// Memory that cannot be read is an error: a node reporting 0 MiB would be
// worse than one that does not start.
func (p *Prober) Probe(accel string) (messages.NodeCapacity, error) {
	if !ValidAccel(accel) {
		return messages.NodeCapacity{}, fmt.Errorf("capacity: accelerator must be auto, kvm or tcg, got %q", accel)
	}
	mem, err := p.memoryMiB()
	if err != nil {
		return messages.NodeCapacity{}, err
	}
	c := messages.NodeCapacity{CPUs: p.numCPU(), MemoryMiB: mem}
	kvmErr := p.openKVM()
	switch accel {
	case AccelKVM:
		if kvmErr != nil {
			return messages.NodeCapacity{}, fmt.Errorf("capacity: --accel kvm: %w", kvmErr)
		}
		c.KVM, c.KVMReason, c.Accelerator = true, ReasonForcedKVM, AccelKVM
	case AccelTCG:
		c.Accelerator = AccelTCG
		if kvmErr != nil {
			c.KVMReason = kvmErr.Error()
		} else {
			c.KVMReason = ReasonForcedTCG
		}
	default: // auto
		c.Accelerator = AccelTCG
		if kvmErr != nil {
			c.KVMReason = kvmErr.Error()
			break
		}
		kvm, tcg, err := p.kvmBoots()
		switch {
		case errors.Is(err, errNoProbe):
			c.KVMReason = ReasonUnverified
		case err != nil:
			c.KVMReason = "kvm present but a long-mode test guest did not boot under it (" + err.Error() +
				"; nested or paravirtual KVM?): using tcg; --accel kvm forces kvm"
		case kvm > tcg:
			// Seen on nested paravirtual KVM: it runs the probe, but 25x
			// slower than emulation, and real kernels stall.
			c.KVMReason = fmt.Sprintf("kvm booted a long-mode test guest in %s, slower than tcg's %s "+
				"(nested or paravirtual KVM?): using tcg; --accel kvm forces kvm",
				kvm.Round(time.Millisecond), tcg.Round(time.Millisecond))
		default:
			c.KVM, c.Accelerator = true, AccelKVM
			c.KVMReason = fmt.Sprintf("kvm verified: a long-mode test guest booted in %s (tcg: %s)",
				kvm.Round(time.Millisecond), tcg.Round(time.Millisecond))
		}
	}
	return c, nil
}

// errNoProbe means no boot probe exists for this host (no QEMU, or an
// architecture the probe payload is not written for).
var errNoProbe = errors.New("no kvm boot probe on this host")

// kvmBoots times the probe under TCG, the baseline KVM must beat, then
// under KVM with a budget a few times that (a KVM that needs longer is of
// no use, whether it would boot eventually or not).
func (p *Prober) kvmBoots() (kvm, tcg time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*BootProbeTimeout)
	defer cancel()
	if p.KVMBoots != nil {
		return p.KVMBoots(ctx)
	}
	if runtime.GOARCH != "amd64" {
		return 0, 0, errNoProbe
	}
	lookPath := p.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	qemu, err := lookPath("qemu-system-x86_64")
	if err != nil {
		return 0, 0, errNoProbe
	}
	tcg, err = BootProbe(ctx, qemu, AccelTCG, BootProbeTimeout)
	if err != nil {
		// The payload or QEMU is broken here, not KVM: nothing to compare.
		return 0, 0, errNoProbe
	}
	kvm, err = BootProbe(ctx, qemu, AccelKVM, max(3*time.Second, 4*tcg))
	return kvm, tcg, err
}

func (p *Prober) numCPU() int {
	if p.NumCPU != nil {
		return p.NumCPU()
	}
	return runtime.NumCPU()
}

// openKVM says why KVM cannot be used, or nil when the device opens
// read-write.
func (p *Prober) openKVM() error {
	path := p.KVMPath
	if path == "" {
		path = "/dev/kvm"
	}
	open := p.OpenKVM
	if open == nil {
		open = func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			return f.Close()
		}
	}
	err := open(path)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist", path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s cannot be opened read-write: permission denied", path)
	default:
		return fmt.Errorf("%s cannot be opened: %w", path, err)
	}
}

// memoryMiB reads MemTotal from /proc/meminfo.
func (p *Prober) memoryMiB() (int64, error) {
	path := p.MeminfoPath
	if path == "" {
		path = "/proc/meminfo"
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("capacity: %w", err)
	}
	return ParseMemTotalMiB(raw)
}

// ParseMemTotalMiB finds "MemTotal: N kB" in a /proc/meminfo text.
func ParseMemTotalMiB(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != "MemTotal" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("capacity: meminfo: bad MemTotal %q", strings.TrimSpace(rest))
		}
		unit := "kB"
		if len(f) > 1 {
			unit = f[1]
		}
		switch unit {
		case "kB":
			return n / 1024, nil
		case "B":
			return n / (1024 * 1024), nil
		default:
			return 0, fmt.Errorf("capacity: meminfo: unknown MemTotal unit %q", unit)
		}
	}
	return 0, errors.New("capacity: meminfo: no MemTotal")
}

// QEMUVersions returns the first line of `--version` of each QEMUBinaries
// found on PATH, in that order; each run is bounded by ExecTimeout. A
// binary that is missing or fails is left out. Never nil.
func (p *Prober) QEMUVersions(ctx context.Context) []string {
	look, run := p.LookPath, p.Run
	if look == nil {
		look = exec.LookPath
	}
	if run == nil {
		run = func(ctx context.Context, path string, args ...string) ([]byte, error) {
			return exec.CommandContext(ctx, path, args...).Output()
		}
	}
	out := []string{}
	for _, bin := range QEMUBinaries {
		path, err := look(bin)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, ExecTimeout)
		raw, err := run(cctx, path, "--version")
		cancel()
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}
