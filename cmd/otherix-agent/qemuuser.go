package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/capacity"
	"github.com/otherix/otherix/nodeagent/qemu"
)

// kvmDevice is the KVM device QEMU opens by path (QEMU 7.2 takes no
// descriptor for it), so its user needs access.
const kvmDevice = "/dev/kvm"

// resolveQEMUUser turns --qemu-user into who QEMU runs as: nil means the
// agent's own user. An agent that is not root cannot switch users, and its
// QEMU is unprivileged anyway. As root, a user that does not exist is an
// error naming the fix, never a silent fallback to root.
func resolveQEMUUser(log *slog.Logger, name string, euid int) (*qemu.User, error) {
	if name == "" || name == "root" {
		if euid == 0 {
			log.Warn("QEMU runs as root (--qemu-user " + fmt.Sprintf("%q", name) + "): a guest that escapes QEMU owns this host; " +
				"use the default --qemu-user " + qemu.DefaultUser)
		}
		return nil, nil
	}
	if euid != 0 {
		log.Info("the agent is not root: QEMU runs as the agent's user", "qemu_user", name, "uid", euid)
		return nil, nil
	}
	u, err := qemu.LookupUser(name)
	if errors.Is(err, qemu.ErrNoSuchUser) {
		return nil, fmt.Errorf("--qemu-user %s: no such user. Create it (scripts/install-deps.sh does, or: "+
			"useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin %s), "+
			"or pass --qemu-user root to run QEMU as root (not recommended)", name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("--qemu-user %s: %w", name, err)
	}
	return u, nil
}

// checkKVMAccess makes sure QEMU's user can open /dev/kvm when the agent
// chose KVM: with --accel auto it falls back to tcg and says why; with
// --accel kvm it is an error naming the fix.
func checkKVMAccess(log *slog.Logger, capa *messages.NodeCapacity, accel string, u *qemu.User, dev string) error {
	if u == nil || capa.Accelerator != capacity.AccelKVM {
		return nil
	}
	ok, err := u.CanReadWrite(dev)
	if ok {
		return nil
	}
	why := fmt.Sprintf("QEMU user %s cannot open %s read-write", u.Name, dev)
	if err != nil {
		why += ": " + err.Error()
	}
	fix := fmt.Sprintf("add %s to the group that owns %s and make it group read-write (usermod -aG kvm %s)", u.Name, dev, u.Name)
	if accel == capacity.AccelKVM {
		return fmt.Errorf("--accel kvm: %s; %s, or use --accel tcg", why, fix)
	}
	capa.Accelerator = capacity.AccelTCG
	capa.KVMReason = why + "; using tcg"
	log.Warn("falling back to tcg: "+why, "fix", fix)
	return nil
}

func qemuUserName(u *qemu.User) string {
	if u == nil {
		return fmt.Sprintf("uid %d", os.Geteuid())
	}
	return u.Name
}
