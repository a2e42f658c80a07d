package qemu

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func baseSpec() Spec {
	return Spec{
		ID: "vm1", Accel: "tcg", CPUs: 2, MemoryMiB: 512,
		Disk: "/var/lib/otherix/vm1/disk.qcow2", RunDir: "/run/otherix/vm1",
	}
}

func TestArgv(t *testing.T) {
	common := func(accel string) []string {
		return []string{
			"qemu-system-x86_64", "-name", "guest=vm1,debug-threads=on", "-machine", "q35,accel=" + accel, "-device", "pvpanic",
			"-smp", "2", "-m", "512M",
			"-nodefaults", "-no-user-config", "-display", "none", "-S",
			"-chardev", "socket,id=qmp,fd=3,server=on,wait=off",
			"-mon", "chardev=qmp,mode=control",
			"-chardev", "socket,id=serial0,fd=4,server=on,wait=off",
			"-serial", "chardev:serial0",
			"-chardev", "socket,id=qga0,fd=5,server=on,wait=off",
			"-action", "panic=shutdown",
		}
	}
	disk := func(fd, set int, backing string) []string {
		return []string{
			"-add-fd", "fd=" + strconv.Itoa(fd) + ",set=" + strconv.Itoa(set),
			"-blockdev", `{"cache":{"direct":true},"discard":"unmap","driver":"file","filename":"/dev/fdset/` + strconv.Itoa(set) + `","node-name":"disk0-file"}`,
			"-blockdev", `{"backing":` + backing + `,"discard":"unmap","driver":"qcow2","file":"disk0-file","node-name":"disk0"}`,
			"-device", "virtio-blk-pci,id=disk0,drive=disk0,bootindex=0,werror=enospc,rerror=report",
		}
	}
	ports := []string{
		"-device", "pcie-root-port,id=hp0,chassis=1,port=0x10", "-device", "pcie-root-port,id=hp1,chassis=2,port=0x11",
		"-device", "pcie-root-port,id=hp2,chassis=3,port=0x12", "-device", "pcie-root-port,id=hp3,chassis=4,port=0x13",
		"-device", "pcie-root-port,id=hp4,chassis=5,port=0x14", "-device", "pcie-root-port,id=hp5,chassis=6,port=0x15",
		"-device", "pcie-root-port,id=hp6,chassis=7,port=0x16", "-device", "pcie-root-port,id=hp7,chassis=8,port=0x17",
		"-device", "virtio-serial-pci,id=vser0",
		"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	none := []string{"-nic", "none"}
	tests := []struct {
		name string
		edit func(*Spec)
		want []string
	}{
		{"amd64 tcg", func(*Spec) {}, cat(common("tcg"), disk(6, 1, "null"), ports, none)},
		{"amd64 kvm", func(s *Spec) { s.Accel = "kvm"; s.Arch = "amd64" }, cat(common("kvm"), disk(6, 1, "null"), ports, none)},
		{"base named by the agent, not the header", func(s *Spec) { s.Base = "/var/lib/otherix/images/deb,ian.qcow2"; s.BaseFormat = "qcow2" }, cat(common("tcg"),
			[]string{"-add-fd", "fd=6,set=1", "-add-fd", "fd=7,set=2",
				"-blockdev", `{"cache":{"direct":true},"driver":"file","filename":"/dev/fdset/1","node-name":"base0-file","read-only":true}`,
				"-blockdev", `{"driver":"qcow2","file":"base0-file","node-name":"base0","read-only":true}`,
				"-blockdev", `{"cache":{"direct":true},"discard":"unmap","driver":"file","filename":"/dev/fdset/2","node-name":"disk0-file"}`,
				"-blockdev", `{"backing":"base0","discard":"unmap","driver":"qcow2","file":"disk0-file","node-name":"disk0"}`,
				"-device", "virtio-blk-pci,id=disk0,drive=disk0,bootindex=0,werror=enospc,rerror=report"}, ports, none)},
		{"seed", func(s *Spec) { s.Seed = "/var/lib/otherix/vm1/seed.iso" }, cat(common("tcg"),
			[]string{"-add-fd", "fd=6,set=1", "-add-fd", "fd=7,set=2",
				"-blockdev", `{"cache":{"direct":true},"discard":"unmap","driver":"file","filename":"/dev/fdset/1","node-name":"disk0-file"}`,
				"-blockdev", `{"backing":null,"discard":"unmap","driver":"qcow2","file":"disk0-file","node-name":"disk0"}`,
				"-blockdev", `{"driver":"file","filename":"/dev/fdset/2","node-name":"seed0-file","read-only":true}`,
				"-blockdev", `{"driver":"raw","file":"seed0-file","node-name":"seed0","read-only":true}`,
				"-device", "virtio-blk-pci,id=disk0,drive=disk0,bootindex=0,werror=enospc,rerror=report", "-device", "virtio-blk-pci,drive=seed0"}, ports, none)},
		{"nics", func(s *Spec) {
			s.NICs = []NIC{{Tap: "otx-a", MAC: "52:54:00:AA:BB:01"}, {Tap: "otx-b", MAC: "52:54:00:aa:bb:02"}}
		}, cat(common("tcg"), disk(6, 1, "null"), ports, []string{
			"-netdev", "tap,id=net0,fd=7",
			"-device", "virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:01",
			"-netdev", "tap,id=net1,fd=8",
			"-device", "virtio-net-pci,netdev=net1,mac=52:54:00:aa:bb:02"})},
		{"sandbox", func(s *Spec) { s.Sandbox = true; s.User = &User{Name: "otherix-qemu", Uid: 999, Gid: 999} }, cat(common("tcg"), disk(6, 1, "null"), ports,
			none, []string{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"})},
		{"arm64 tcg", func(s *Spec) { s.Arch = "arm64" }, func() []string {
			a := cat(common("tcg"), disk(6, 1, "null"), ports, none)
			a[0] = "qemu-system-aarch64"
			return append(append(a[:3:3], "-machine", "virt,accel=tcg", "-cpu", "max", "-device", "pvpanic-pci"), a[7:]...)
		}()},
		{"custom binary", func(s *Spec) { s.Binary = "/opt/qemu/bin/qemu-system-x86_64" }, func() []string {
			a := cat(common("tcg"), disk(6, 1, "null"), ports, none)
			a[0] = "/opt/qemu/bin/qemu-system-x86_64"
			return a
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			tt.edit(&s)
			got, err := Argv(s)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
			again, _ := Argv(s)
			if !cmp.Equal(got, again) {
				t.Error("argv is not deterministic")
			}
			// QEMU must open nothing by path: every path is the agent's.
			for _, a := range got {
				if strings.Contains(a, "/var/lib") || strings.Contains(a, "/run/otherix") {
					t.Errorf("argv names a host path: %s", a)
				}
			}
		})
	}
}

func TestArgvInvalid(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"empty id", func(s *Spec) { s.ID = "" }, "id"},
		{"id with comma", func(s *Spec) { s.ID = "a,b" }, "id"},
		{"empty disk", func(s *Spec) { s.Disk = "" }, "disk is empty"},
		{"zero cpus", func(s *Spec) { s.CPUs = 0 }, "cpus 0"},
		{"tiny memory", func(s *Spec) { s.MemoryMiB = 1 }, "memory"},
		{"bad accel", func(s *Spec) { s.Accel = "hvf" }, "accel"},
		{"bad arch", func(s *Spec) { s.Arch = "riscv64" }, "arch"},
		{"relative run dir", func(s *Spec) { s.RunDir = "run/vm1" }, "absolute"},
		{"long run dir", func(s *Spec) { s.RunDir = "/" + strings.Repeat("x", 100) }, "unix sockets allow"},
		{"bad mac", func(s *Spec) { s.NICs = []NIC{{Tap: "t0", MAC: "52:54:00:zz:00:01"}} }, "mac"},
		{"multicast mac", func(s *Spec) { s.NICs = []NIC{{Tap: "t0", MAC: "01:00:5e:00:00:01"}} }, "multicast"},
		{"duplicate mac", func(s *Spec) {
			s.NICs = []NIC{{Tap: "t0", MAC: "52:54:00:00:00:01"}, {Tap: "t1", MAC: "52:54:00:00:00:01"}}
		}, "used twice"},
		{"empty tap", func(s *Spec) { s.NICs = []NIC{{MAC: "52:54:00:00:00:01"}} }, "tap"},
		{"tap with comma", func(s *Spec) { s.NICs = []NIC{{Tap: "t0,script=/x", MAC: "52:54:00:00:00:01"}} }, "tap"},
		{"user with uid 0", func(s *Spec) { s.User = &User{Name: "toor"} }, "root"},
		{"base without format", func(s *Spec) { s.Base = "/b.qcow2" }, "base format"},
		{"base with a probed format", func(s *Spec) { s.Base = "/b.qcow2"; s.BaseFormat = "vmdk" }, "base format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			tt.edit(&s)
			_, err := Argv(s)
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("err = %v, want ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}
