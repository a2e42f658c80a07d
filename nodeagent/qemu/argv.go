// Package qemu launches QEMU as a daemon, re-adopts it after an agent
// restart, and speaks typed QMP to it.
package qemu

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/otherix/otherix/messages"
)

// Names of the files QEMU keeps in a VM's run directory.
const (
	PidFile      = "qemu.pid"
	QMPSocket    = "qmp.sock"
	SerialSocket = "serial.sock"
)

// sunPathMax is sizeof(sockaddr_un.sun_path) minus the terminating NUL:
// QEMU refuses longer socket paths, and it would do so only at start.
const sunPathMax = 107

// NIC is one guest network interface backed by a tap device that the
// network layer has already created; QEMU only opens it.
type NIC struct {
	Tap string // host interface name
	MAC string // guest MAC, unicast
}

// Spec is everything needed to launch one VM.
type Spec struct {
	ID        string // VM id: -name guest=ID
	Binary    string // default qemu-system-x86_64 (amd64) or qemu-system-aarch64 (arm64)
	Arch      string // "amd64" (default) or "arm64"
	Accel     string // "kvm" or "tcg"
	CPUs      int
	MemoryMiB int
	Disk      string // qcow2 overlay, virtio-blk
	Seed      string // optional NoCloud ISO, read-only virtio-blk
	NICs      []NIC
	RunDir    string // absolute; holds qemu.pid, qmp.sock, serial.sock
	RunAsUser string // optional: QEMU drops privileges to this user after opening its files
	Sandbox   bool   // seccomp; see sandboxOpts for what -daemonize allows
}

// QMPPath is where QEMU listens for QMP in runDir.
func QMPPath(runDir string) string { return filepath.Join(runDir, QMPSocket) }

// SerialPath is where QEMU serves the guest's first serial port in runDir.
func SerialPath(runDir string) string { return filepath.Join(runDir, SerialSocket) }

// PidPath is where the daemonized QEMU writes its pid in runDir.
func PidPath(runDir string) string { return filepath.Join(runDir, PidFile) }

// sandboxOpts is narrower than the ideal
// "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny":
// measured on QEMU 7.2, seccomp is installed before -daemonize forks and
// calls setsid, so spawn=deny kills QEMU at clone(2) and
// elevateprivileges=deny (or =children) kills it at setsid(2). Both are
// only usable once QEMU is launched without -daemonize.
const sandboxOpts = "on,obsolete=deny,resourcecontrol=deny"

// Argv validates s and returns the full command line, binary first. The
// result depends only on s, so it can be logged and compared.
func Argv(s Spec) ([]string, error) {
	if err := validate(s); err != nil {
		return nil, err
	}
	arch := s.Arch
	if arch == "" {
		arch = "amd64"
	}
	bin := s.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
		if arch == "arm64" {
			bin = "qemu-system-aarch64"
		}
	}

	a := []string{bin, "-name", "guest=" + s.ID}
	switch arch {
	case "amd64":
		// No -cpu host under kvm: it aborts on nested PVM hosts
		// ("failed to set MSR 0x10a"); QEMU's default model runs everywhere.
		a = append(a, "-machine", "q35,accel="+s.Accel)
	case "arm64":
		cpu := "max"
		if s.Accel == "kvm" {
			cpu = "host"
		}
		a = append(a, "-machine", "virt,accel="+s.Accel, "-cpu", cpu)
	}
	a = append(a,
		"-smp", strconv.Itoa(s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB)+"M",
		"-nodefaults", "-no-user-config", "-display", "none",
		// The launcher exits only once QEMU is initialised, so the sockets
		// exist when exec returns; -S holds the guest until the caller has
		// attached the serial log and sends cont.
		"-daemonize", "-pidfile", PidPath(s.RunDir), "-S",
		"-chardev", "socket,id=qmp,path="+optEscape(QMPPath(s.RunDir))+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,path="+optEscape(SerialPath(s.RunDir))+",server=on,wait=off",
		"-serial", "chardev:serial0",
		// cache=none keeps guest data out of the host page cache; the
		// guest still sees a write cache and flushes it.
		"-drive", "file="+optEscape(s.Disk)+",if=none,id=disk0,format=qcow2,cache=none,discard=unmap",
		"-device", "virtio-blk-pci,drive=disk0,bootindex=0",
	)
	if s.Seed != "" {
		// virtio, not a CD-ROM: the cloud kernel has no AHCI driver for q35's cdrom.
		a = append(a,
			"-drive", "file="+optEscape(s.Seed)+",if=none,id=seed0,format=raw,readonly=on",
			"-device", "virtio-blk-pci,drive=seed0",
		)
	}
	if len(s.NICs) == 0 {
		a = append(a, "-nic", "none")
	}
	for i, n := range s.NICs {
		mac, _ := net.ParseMAC(n.MAC) // validated
		id := "net" + strconv.Itoa(i)
		a = append(a,
			"-netdev", "tap,id="+id+",ifname="+n.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev="+id+",mac="+mac.String(),
		)
	}
	if s.RunAsUser != "" {
		a = append(a, "-runas", s.RunAsUser)
	}
	if s.Sandbox {
		a = append(a, "-sandbox", sandboxOpts)
	}
	return a, nil
}

// optEscape doubles commas, QEMU's escape inside option values, so a path
// cannot inject options.
func optEscape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

func validate(s Spec) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
	}
	if s.ID == "" || len(s.ID) > 64 || !isName(s.ID, "._-") {
		return bad("id %q: want 1-64 of [A-Za-z0-9._-]", s.ID)
	}
	switch s.Arch {
	case "", "amd64", "arm64":
	default:
		return bad("arch %q: want amd64 or arm64", s.Arch)
	}
	if s.Accel != "kvm" && s.Accel != "tcg" {
		return bad("accel %q: want kvm or tcg", s.Accel)
	}
	if s.CPUs < 1 || s.CPUs > messages.MaxCPUs {
		return bad("cpus %d: want 1-%d", s.CPUs, messages.MaxCPUs)
	}
	if s.MemoryMiB < 16 {
		return bad("memory %d MiB: want at least 16", s.MemoryMiB)
	}
	if s.Disk == "" {
		return bad("disk is empty")
	}
	if s.RunDir == "" || !filepath.IsAbs(s.RunDir) {
		return bad("run dir %q: want an absolute path", s.RunDir)
	}
	// -pidfile takes the path raw, where Attach looks for it verbatim.
	if strings.ContainsAny(s.RunDir, ",\x00") {
		return bad("run dir %q: must not contain commas", s.RunDir)
	}
	for _, p := range []string{QMPPath(s.RunDir), SerialPath(s.RunDir)} {
		if len(p) > sunPathMax {
			return bad("socket path %q is %d bytes, unix sockets allow %d", p, len(p), sunPathMax)
		}
	}
	macs := make(map[string]bool)
	for i, n := range s.NICs {
		if n.Tap == "" || len(n.Tap) > 15 || !isName(n.Tap, "._-") {
			return bad("nic %d: tap %q: want 1-15 of [A-Za-z0-9._-]", i, n.Tap)
		}
		mac, err := net.ParseMAC(n.MAC)
		if err != nil || len(mac) != 6 {
			return bad("nic %d: mac %q: want a 6-byte MAC", i, n.MAC)
		}
		if mac[0]&1 != 0 {
			return bad("nic %d: mac %s is multicast", i, mac)
		}
		if macs[mac.String()] {
			return bad("nic %d: mac %s is used twice", i, mac)
		}
		macs[mac.String()] = true
	}
	if s.RunAsUser != "" && !isName(s.RunAsUser, "._-") {
		return bad("run-as user %q: want [A-Za-z0-9._-]", s.RunAsUser)
	}
	return nil
}

func isName(s, extra string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(extra, r):
		default:
			return false
		}
	}
	return true
}
