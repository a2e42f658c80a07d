package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// DefaultUser is the system user QEMU runs as unless the operator says
// otherwise; scripts/install-deps.sh and the packages create it.
const DefaultUser = "otherix-qemu"

// User is an unprivileged account QEMU is started as.
type User struct {
	Name   string
	Uid    uint32
	Gid    uint32
	Groups []uint32 // supplementary groups, e.g. kvm for /dev/kvm
}

// ErrNoSuchUser means the QEMU user does not exist on this host.
var ErrNoSuchUser = errors.New("qemu: no such user")

// LookupUser resolves name from the host's user database. A user whose
// uid is 0 is refused: running QEMU "unprivileged" as it would be root.
func LookupUser(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, name)
		}
		return nil, fmt.Errorf("qemu: look up user %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("qemu: user %s has a non-numeric uid or gid", name)
	}
	if uid == 0 {
		return nil, fmt.Errorf("qemu: user %s has uid 0, which is root", name)
	}
	out := &User{Name: name, Uid: uint32(uid), Gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("qemu: groups of user %s: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			continue
		}
		if n == 0 {
			// Group root opens root-group files: not unprivileged.
			return nil, fmt.Errorf("qemu: user %s is in group root (gid 0)", name)
		}
		if uint32(n) != out.Gid && !slices.Contains(out.Groups, uint32(n)) {
			out.Groups = append(out.Groups, uint32(n))
		}
	}
	return out, nil
}

// credential is what the kernel is told at exec.
func (u *User) credential() *syscall.Credential {
	groups := append([]uint32{u.Gid}, u.Groups...)
	return &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: groups}
}

// CanReadWrite reports whether u may open path read-write by its mode
// bits, as the kernel's DAC check would (no ACLs). The agent uses it on
// /dev/kvm before choosing KVM for a QEMU that runs as u.
func (u *User) CanReadWrite(path string) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("qemu: stat %s: no owner", path)
	}
	mode := uint32(fi.Mode().Perm())
	var bits uint32
	switch {
	case st.Uid == u.Uid:
		bits = mode >> 6
	case st.Gid == u.Gid || slices.Contains(u.Groups, st.Gid):
		bits = mode >> 3
	default:
		bits = mode
	}
	return bits&6 == 6, nil
}
