package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// libvirt creates the same VM with `virsh create` of a transient domain on
// the qemu:///system daemon that scripts/bench-vm.sh started.
type libvirt struct {
	dir  string // world-readable: libvirt runs QEMU as libvirt-qemu
	base string
	cfg  vmShape
}

// domainXML is the agent's VM in libvirt's words: q35, no default devices,
// a virtio-blk qcow2 overlay with cache=none, the serial port on a unix
// socket, no NIC, no graphics, no balloon, no USB.
var domainXML = template.Must(template.New("domain").Parse(`<domain type='{{.Type}}'>
  <name>{{.Name}}</name>
  <memory unit='MiB'>{{.MemoryMiB}}</memory>
  <vcpu>{{.CPUs}}</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
      <source file='{{.Disk}}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='unix'><source mode='bind' path='{{.Serial}}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`))

func (l *libvirt) name(i int) string { return fmt.Sprintf("oxbench-%d", i) }

// createOne creates the overlay, runs virsh create and polls virsh domstate
// until it says running (in practice the first answer: virsh create returns
// once QEMU runs the guest).
func (l *libvirt) createOne(i int) (time.Duration, error) {
	run := filepath.Join(l.dir, strconv.Itoa(i))
	if err := os.MkdirAll(run, 0o755); err != nil {
		return 0, err
	}
	disk := filepath.Join(run, "disk.qcow2")
	xmlPath := filepath.Join(run, "domain.xml")
	typ := "kvm"
	if l.cfg.Accel == "tcg" {
		typ = "qemu"
	}
	var x bytes.Buffer
	if err := domainXML.Execute(&x, map[string]any{"Type": typ, "Name": l.name(i), "MemoryMiB": l.cfg.MemoryMiB,
		"CPUs": l.cfg.CPUs, "Disk": disk, "Serial": filepath.Join(run, "serial.sock")}); err != nil {
		return 0, err
	}
	if err := os.WriteFile(xmlPath, x.Bytes(), 0o644); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", l.base,
		disk, strconv.FormatInt(l.cfg.DiskBytes, 10)).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	if out, err := virsh("create", xmlPath); err != nil {
		return 0, fmt.Errorf("virsh create: %v: %s", err, out)
	}
	for {
		out, err := virsh("domstate", l.name(i))
		if err != nil {
			return 0, fmt.Errorf("virsh domstate: %v: %s", err, out)
		}
		if strings.TrimSpace(out) == "running" {
			return time.Since(t0), nil
		}
		if time.Since(t0) > 30*time.Second {
			return 0, fmt.Errorf("domain %s is %q after 30s", l.name(i), strings.TrimSpace(out))
		}
	}
}

// destroy ends domain i (a transient domain is gone once destroyed, so there
// is nothing to undefine; undefine is tried anyway in case it was defined).
func (l *libvirt) destroy(i int) {
	_, _ = virsh("destroy", l.name(i))
	_, _ = virsh("undefine", l.name(i))
	os.RemoveAll(filepath.Join(l.dir, strconv.Itoa(i)))
}

func virsh(args ...string) (string, error) {
	out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system", "-q"}, args...)...).CombinedOutput()
	return string(out), err
}
