// Package guest provides a small bootable test guest for tests that start
// real QEMU virtual machines.
//
// The guest is a qcow2 disk image shaped like a cloud image (MBR, one FAT
// partition with syslinux, the Debian cloud kernel and a busybox initramfs),
// built by build.sh from Debian packages and cached. At boot it looks for a
// NoCloud seed (a block device whose ISO9660 volume label is "cidata"), sets
// its hostname from meta-data and prints one line on ttyS0:
//
//	OTHERIX-GUEST-READY instance-id=<id> hostname=<name>
//
// (or "OTHERIX-GUEST-READY instance-id=none" without a seed). A user-data
// that starts with "#!" is then run and followed by
// "OTHERIX-USERDATA-DONE rc=<rc>". A seed with a network-config (netplan
// v2 as cloudinit.NetworkConfig writes it) configures each NIC by MAC
// first: MTU, address, 169.254.1.1 on-link and the default route via it,
// then "OTHERIX-NET-READY <ip> …" (busybox ip and ping are there). The
// ACPI power button (QMP system_powerdown) powers the guest off, and a root
// shell runs on ttyS0.
//
// The guest has no AHCI driver: on -machine q35 attach the seed as a
// read-only virtio disk (or a scsi-cd on virtio-scsi-pci). On a nested host
// whose KVM cannot run guests use -accel tcg.
package guest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// ReadyMarker starts the line the guest prints on ttyS0 once it has read
// its seed (or found none).
const ReadyMarker = "OTHERIX-GUEST-READY"

// NetReadyMarker starts the line the guest prints for each interface it
// configured from its seed's network-config, followed by the address:
// "OTHERIX-NET-READY 10.10.0.2 dev=eth0 mac=52:54:00:…".
const NetReadyMarker = "OTHERIX-NET-READY"

// UserDataDoneMarker starts the line printed after a user-data script ran.
const UserDataDoneMarker = "OTHERIX-USERDATA-DONE"

// CacheDir returns the directory that holds the built image:
// $OTHERIX_TEST_CACHE, or else $HOME/.cache/otherix/test-guest.
func CacheDir() (string, error) {
	if d := os.Getenv("OTHERIX_TEST_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no OTHERIX_TEST_CACHE and no home directory: %w", err)
	}
	return filepath.Join(home, ".cache", "otherix", "test-guest"), nil
}

// buildScript returns the path of build.sh, next to this source file.
func buildScript() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the guest package source")
	}
	return filepath.Join(filepath.Dir(file), "build.sh"), nil
}

// Build builds the image in dir, or reuses it when it is up to date, and
// returns the absolute path of guest.qcow2 and build.sh's output.
// Concurrent callers, in this process or others, are serialized with a
// flock on dir/lock.
func Build(dir string) (string, []byte, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	script, err := buildScript()
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", nil, err
	}
	defer lock.Close()
	for {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return "", nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN) //nolint:errcheck // closing releases it too

	var out bytes.Buffer
	cmd := exec.Command("bash", script, dir)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return "", out.Bytes(), fmt.Errorf("%s %s: %w", script, dir, err)
	}
	img := filepath.Join(dir, "guest.qcow2")
	if _, err := os.Stat(img); err != nil {
		return "", out.Bytes(), fmt.Errorf("%s succeeded but: %w", script, err)
	}
	return img, out.Bytes(), nil
}

// Image builds (or reuses) the test guest image in CacheDir and returns the
// absolute path of guest.qcow2. Use it read-only: boot a qcow2 overlay
// (qemu-img create -f qcow2 -F qcow2 -b IMAGE overlay.qcow2).
func Image(tb testing.TB) string {
	tb.Helper()
	dir, err := CacheDir()
	if err != nil {
		tb.Fatalf("test guest: %v", err)
	}
	img, out, err := Build(dir)
	if err != nil {
		tb.Fatalf("test guest: build failed: %v\n%s", err, out)
	}
	return img
}
