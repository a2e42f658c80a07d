package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/capacity"
	"github.com/otherix/otherix/nodeagent/qemu"
)

func TestResolveQEMUUser(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, name := range []string{"", "root"} {
		if u, err := resolveQEMUUser(log, name, 0); u != nil || err != nil {
			t.Errorf("%q: %v, %v; want QEMU as the agent's user", name, u, err)
		}
	}
	// Before: a missing user meant QEMU quietly kept root.
	_, err := resolveQEMUUser(log, "otherix-no-such-user", 0)
	if err == nil {
		t.Fatal("a missing QEMU user was accepted")
	}
	for _, want := range []string{"otherix-no-such-user: no such user", "useradd --system", "--qemu-user root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if u, err := resolveQEMUUser(log, "otherix-no-such-user", 1000); u != nil || err != nil {
		t.Errorf("unprivileged agent: %v, %v; want QEMU as the agent's user", u, err)
	}
	if u, err := resolveQEMUUser(log, "nobody", 0); err != nil || u == nil || u.Uid == 0 || u.Name != "nobody" {
		t.Errorf("nobody: %+v, %v", u, err)
	}
}

func TestCheckKVMAccess(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u := &qemu.User{Name: "otherix-qemu", Uid: 64000, Gid: 64000}
	kvm := func() *messages.NodeCapacity {
		return &messages.NodeCapacity{KVM: true, Accelerator: capacity.AccelKVM}
	}
	c := kvm()
	if err := checkKVMAccess(log, c, capacity.AccelAuto, u, dev); err != nil || c.Accelerator != capacity.AccelTCG ||
		!strings.Contains(c.KVMReason, "cannot open") {
		t.Errorf("auto with an inaccessible device: %v, %+v; want tcg and the reason", err, c)
	}
	if err := checkKVMAccess(log, kvm(), capacity.AccelKVM, u, dev); err == nil || !strings.Contains(err.Error(), "usermod -aG kvm") {
		t.Errorf("forced kvm with an inaccessible device: %v; want an error naming the fix", err)
	}
	if err := os.Chown(dev, 0, 64000); err != nil {
		t.Skip("chown:", err)
	}
	if err := os.Chmod(dev, 0o660); err != nil {
		t.Fatal(err)
	}
	c = kvm()
	if err := checkKVMAccess(log, c, capacity.AccelKVM, u, dev); err != nil || c.Accelerator != capacity.AccelKVM {
		t.Errorf("group access: %v, %+v; want kvm", err, c)
	}
	if err := checkKVMAccess(log, kvm(), capacity.AccelKVM, nil, dev); err != nil {
		t.Errorf("QEMU as the agent's user: %v", err)
	}
}
