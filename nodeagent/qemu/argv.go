// Package qemu launches QEMU as an unprivileged, sandboxed child of the
// agent, re-adopts it after an agent restart, and speaks typed QMP to it.
package qemu

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/otherix/otherix/messages"
)

// Names of the files the agent keeps in a VM's run directory. The agent
// binds the sockets and writes the pid file; QEMU only inherits the
// listening sockets, so it needs no access to the directory at all.
const (
	PidFile      = "qemu.pid"
	QMPSocket    = "qmp.sock"
	SerialSocket = "serial.sock"
	// GuestAgentSocket is QEMU's end of the guest agent channel
	// (virtio-serial port org.qemu.guest_agent.0, guestagent.go).
	GuestAgentSocket = "qga.sock"
)

// sunPathMax is sizeof(sockaddr_un.sun_path) minus the terminating NUL:
// longer socket paths cannot be bound.
const sunPathMax = 107

// SandboxOpts is QEMU's seccomp policy: beyond the default deny list, no
// obsolete syscalls, no set*id, no fork/exec, no scheduler or resource
// changes. It is usable because QEMU no longer daemonizes (-daemonize forks
// and calls setsid after the filter is installed) and no longer drops
// privileges itself (-runas calls setuid).
const SandboxOpts = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// NIC is one guest network interface backed by a tap device that the
// network layer has already created; the agent opens it and hands QEMU the
// file descriptor.
type NIC struct {
	Tap string // host interface name
	MAC string // guest MAC, unicast
}

// Spec is everything needed to launch one VM.
type Spec struct {
	ID        string // VM id: -name guest=ID,debug-threads=on
	Binary    string // default qemu-system-x86_64 (amd64) or qemu-system-aarch64 (arm64)
	Arch      string // "amd64" (default) or "arm64"
	Accel     string // "kvm" or "tcg"
	CPUs      int
	MemoryMiB int
	Disk      string // the VM disk: qcow2 on Base, virtio-blk
	// Base is the VM disk's backing image as the agent recorded it when it
	// made the disk. QEMU is told it explicitly and never follows the
	// backing name in Disk's header, which a compromised QEMU can rewrite.
	// Empty means Disk has no backing image.
	Base       string
	BaseFormat string // "qcow2" or "raw"; required with Base
	Seed       string // optional NoCloud ISO, read-only virtio-blk
	NICs       []NIC
	RunDir     string // absolute; holds qemu.pid, qmp.sock, serial.sock
	// User is who QEMU runs as, from exec on: it never holds root. nil
	// keeps the agent's own user (root, when the operator opted out).
	User    *User
	Sandbox bool // seccomp with SandboxOpts
}

// QMPPath is where QEMU listens for QMP in runDir.
func QMPPath(runDir string) string { return filepath.Join(runDir, QMPSocket) }

// SerialPath is where QEMU serves the guest's first serial port in runDir.
func SerialPath(runDir string) string { return filepath.Join(runDir, SerialSocket) }

// GuestAgentPath is where QEMU serves the guest agent channel in runDir.
func GuestAgentPath(runDir string) string { return filepath.Join(runDir, GuestAgentSocket) }

// PidPath is where the agent records QEMU's pid in runDir.
func PidPath(runDir string) string { return filepath.Join(runDir, PidFile) }

// fdKind is what the agent opens for one descriptor QEMU inherits.
type fdKind int

const (
	fdListen    fdKind = iota // a unix socket bound and listening at path
	fdReadOnly                // a file opened read-only
	fdReadWrite               // a file opened read-write
	fdTap                     // the tap device named path, through /dev/net/tun
)

// inherit is one descriptor QEMU gets, at fd 3+index in Argv's plan.
type inherit struct {
	kind fdKind
	path string
}

// firstFD is the first descriptor after stdin, stdout and stderr.
const firstFD = 3

// Argv validates s and returns the full command line, binary first. The
// result depends only on s, so it can be logged and compared.
func Argv(s Spec) ([]string, error) {
	a, _, err := plan(s)
	return a, err
}

// plan returns the command line and the descriptors it refers to: every
// file, socket and tap is opened by the agent and inherited, so QEMU opens
// nothing by path.
func plan(s Spec) ([]string, []inherit, error) {
	if err := validate(s); err != nil {
		return nil, nil, err
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
	var fds []inherit
	fd := func(k fdKind, path string) string {
		fds = append(fds, inherit{kind: k, path: path})
		return strconv.Itoa(firstFD + len(fds) - 1)
	}
	// fdset numbers the files QEMU opens as /dev/fdset/N.
	fdsets := 0
	var addFD []string
	fdset := func(k fdKind, path string) string {
		fdsets++
		addFD = append(addFD, "-add-fd", "fd="+fd(k, path)+",set="+strconv.Itoa(fdsets))
		return "/dev/fdset/" + strconv.Itoa(fdsets)
	}

	// debug-threads names each vCPU thread ("CPU 0/KVM"), so an operator's
	// top -H, and a test of the agent's metrics, can tell them from the
	// main loop and the I/O threads.
	a := []string{bin, "-name", "guest=" + s.ID + ",debug-threads=on"}
	switch arch {
	case "amd64":
		// No -cpu host under kvm: it aborts on nested PVM hosts
		// ("failed to set MSR 0x10a"); QEMU's default model runs everywhere.
		a = append(a, "-machine", "q35,accel="+s.Accel)
		// pvpanic tells QEMU (GUEST_PANICKED) when the guest kernel
		// panics; x86 guests find the ISA device through ACPI.
		a = append(a, "-device", "pvpanic")
	case "arm64":
		cpu := "max"
		if s.Accel == "kvm" {
			cpu = "host"
		}
		a = append(a, "-machine", "virt,accel="+s.Accel, "-cpu", cpu, "-device", "pvpanic-pci")
	}
	a = append(a,
		"-smp", strconv.Itoa(s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB)+"M",
		"-nodefaults", "-no-user-config", "-display", "none",
		// -S holds the guest until the caller has attached the serial log
		// and sends cont.
		"-S",
		"-chardev", "socket,id=qmp,fd="+fd(fdListen, QMPPath(s.RunDir))+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=serial0,fd="+fd(fdListen, SerialPath(s.RunDir))+",server=on,wait=off",
		"-serial", "chardev:serial0",
		"-chardev", "socket,id=qga0,fd="+fd(fdListen, GuestAgentPath(s.RunDir))+",server=on,wait=off",
		// A panicked guest is ended rather than left paused: nothing reads
		// a paused guest's memory, the panic is in the serial log, and the
		// node gets its memory back. The agent reports the VM crashed.
		"-action", "panic=shutdown",
	)
	var blockdevs []string
	backing := any(nil) // JSON null: no backing file, whatever the header says
	if s.Base != "" {
		blockdevs = append(blockdevs,
			blockdev(map[string]any{"driver": "file", "node-name": "base0-file", "filename": fdset(fdReadOnly, s.Base),
				"read-only": true, "cache": map[string]any{"direct": true}}),
			blockdev(map[string]any{"driver": s.BaseFormat, "node-name": "base0", "file": "base0-file", "read-only": true}))
		backing = "base0"
	}
	// cache.direct keeps guest data out of the host page cache; the guest
	// still sees a write cache and flushes it.
	blockdevs = append(blockdevs,
		blockdev(map[string]any{"driver": "file", "node-name": "disk0-file", "filename": fdset(fdReadWrite, s.Disk),
			"cache": map[string]any{"direct": true}, "discard": "unmap"}),
		blockdev(map[string]any{"driver": "qcow2", "node-name": "disk0", "file": "disk0-file", "backing": backing,
			"discard": "unmap"}))
	// A write that fails for lack of space on the node pauses the guest
	// (QMP BLOCK_IO_ERROR, then STOP) instead of handing it an I/O error
	// that would corrupt or remount its filesystems; once space is freed,
	// cont retries the write. Any other error goes to the guest, which
	// handles a failing disk better than a pause nobody can cure.
	// id=disk0 names the device for query-block and the chain read back
	// (Monitor.Chain), like hot-plugged disks (hotplug.go).
	devices := []string{"-device", "virtio-blk-pci,id=disk0,drive=disk0,bootindex=0," + diskErrorPolicy}
	if s.Seed != "" {
		// virtio, not a CD-ROM: the cloud kernel has no AHCI driver for q35's cdrom.
		blockdevs = append(blockdevs,
			blockdev(map[string]any{"driver": "file", "node-name": "seed0-file", "filename": fdset(fdReadOnly, s.Seed),
				"read-only": true}),
			blockdev(map[string]any{"driver": "raw", "node-name": "seed0", "file": "seed0-file", "read-only": true}))
		devices = append(devices, "-device", "virtio-blk-pci,drive=seed0")
	}
	a = append(a, addFD...)
	for _, b := range blockdevs {
		a = append(a, "-blockdev", b)
	}
	a = append(a, devices...)
	// Empty PCIe root ports for disks attached while the VM runs: q35's
	// and virt's root buses take no hot-plugged device, and ports cannot
	// be added later. Each costs a PCI slot on the root bus and nothing
	// while empty. chassis/port pairs must be unique.
	for i := 0; i < HotplugPorts; i++ {
		a = append(a, "-device", fmt.Sprintf("pcie-root-port,id=%s,chassis=%d,port=0x%x", hotplugPort(i), i+1, 0x10+i))
	}
	// The guest agent channel: a virtio-serial port the guest's qemu-ga
	// opens by name, whose host end (chardev qga0 above) is a socket the
	// agent dials (guestagent.go). A guest that runs no agent just never
	// answers.
	a = append(a,
		"-device", "virtio-serial-pci,id=vser0",
		"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
	)
	if len(s.NICs) == 0 {
		a = append(a, "-nic", "none")
	}
	for i, n := range s.NICs {
		mac, _ := net.ParseMAC(n.MAC) // validated
		id := "net" + strconv.Itoa(i)
		a = append(a,
			"-netdev", "tap,id="+id+",fd="+fd(fdTap, n.Tap),
			"-device", "virtio-net-pci,netdev="+id+",mac="+mac.String(),
		)
	}
	if s.Sandbox {
		a = append(a, "-sandbox", SandboxOpts)
	}
	return a, fds, nil
}

// diskErrorPolicy is the VM disk's werror/rerror: QEMU's defaults today,
// written out so a QEMU that changes them does not change the agent.
const diskErrorPolicy = "werror=enospc,rerror=report"

// blockdev renders one -blockdev in QEMU's JSON syntax, which needs no
// escaping of paths and can say "backing": null.
func blockdev(v map[string]any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of strings, bools and maps
	}
	return string(b)
}

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
	if s.Base != "" && s.BaseFormat != "qcow2" && s.BaseFormat != "raw" {
		return bad("base format %q: want qcow2 or raw", s.BaseFormat)
	}
	if s.RunDir == "" || !filepath.IsAbs(s.RunDir) {
		return bad("run dir %q: want an absolute path", s.RunDir)
	}
	if strings.ContainsRune(s.RunDir, 0) {
		return bad("run dir %q: must not contain NUL", s.RunDir)
	}
	for _, p := range []string{QMPPath(s.RunDir), SerialPath(s.RunDir), GuestAgentPath(s.RunDir)} {
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
	if s.User != nil && s.User.Uid == 0 {
		return bad("user %q has uid 0: that is root", s.User.Name)
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
