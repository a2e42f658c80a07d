package qemu

import (
	"errors"
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
			"qemu-system-x86_64", "-name", "guest=vm1", "-machine", "q35,accel=" + accel,
			"-smp", "2", "-m", "512M",
			"-nodefaults", "-no-user-config", "-display", "none",
			"-daemonize", "-pidfile", "/run/otherix/vm1/qemu.pid", "-S",
			"-chardev", "socket,id=qmp,path=/run/otherix/vm1/qmp.sock,server=on,wait=off",
			"-mon", "chardev=qmp,mode=control",
			"-chardev", "socket,id=serial0,path=/run/otherix/vm1/serial.sock,server=on,wait=off",
			"-serial", "chardev:serial0",
			"-drive", "file=/var/lib/otherix/vm1/disk.qcow2,if=none,id=disk0,format=qcow2,cache=none,discard=unmap",
			"-device", "virtio-blk-pci,drive=disk0,bootindex=0",
		}
	}
	tests := []struct {
		name string
		edit func(*Spec)
		want []string
	}{
		{"amd64 tcg", func(*Spec) {}, append(common("tcg"), "-nic", "none")},
		{"amd64 kvm", func(s *Spec) { s.Accel = "kvm"; s.Arch = "amd64" }, append(common("kvm"), "-nic", "none")},
		{"seed", func(s *Spec) { s.Seed = "/var/lib/otherix/vm1/seed.iso" }, append(common("tcg"),
			"-drive", "file=/var/lib/otherix/vm1/seed.iso,if=none,id=seed0,format=raw,readonly=on",
			"-device", "virtio-blk-pci,drive=seed0",
			"-nic", "none")},
		{"nics", func(s *Spec) {
			s.NICs = []NIC{{Tap: "otx-a", MAC: "52:54:00:AA:BB:01"}, {Tap: "otx-b", MAC: "52:54:00:aa:bb:02"}}
		}, append(common("tcg"),
			"-netdev", "tap,id=net0,ifname=otx-a,script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:01",
			"-netdev", "tap,id=net1,ifname=otx-b,script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=net1,mac=52:54:00:aa:bb:02")},
		{"runas and sandbox", func(s *Spec) { s.RunAsUser = "otherix-qemu"; s.Sandbox = true }, append(common("tcg"),
			"-nic", "none", "-runas", "otherix-qemu", "-sandbox", "on,obsolete=deny,resourcecontrol=deny")},
		{"comma in disk path is escaped", func(s *Spec) { s.Disk = "/d/a,b.qcow2" }, func() []string {
			a := append(common("tcg"), "-nic", "none")
			a[26] = "file=/d/a,,b.qcow2,if=none,id=disk0,format=qcow2,cache=none,discard=unmap"
			return a
		}()},
		{"arm64 tcg", func(s *Spec) { s.Arch = "arm64" }, func() []string {
			a := append(common("tcg"), "-nic", "none")
			a[0] = "qemu-system-aarch64"
			return append(append(a[:3:3], "-machine", "virt,accel=tcg", "-cpu", "max"), a[5:]...)
		}()},
		{"custom binary", func(s *Spec) { s.Binary = "/opt/qemu/bin/qemu-system-x86_64" }, func() []string {
			a := append(common("tcg"), "-nic", "none")
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
		{"runas with comma", func(s *Spec) { s.RunAsUser = "a,b" }, "run-as"},
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
