package vmactor

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestBaseOfLegacyRecord: a record written before the agent kept the base
// image falls back to the VM disk's header, trusted only inside this
// pool's image cache with a named format: QEMU can rewrite the header, and
// the agent opens the base as root for it.
func TestBaseOfLegacyRecord(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("no qemu-img")
	}
	pool := t.TempDir()
	images := filepath.Join(pool, "images")
	vms := filepath.Join(pool, "vms")
	for _, d := range []string{images, vms} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	base := filepath.Join(images, "base.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", base, "16M")
	secret := filepath.Join(pool, "secret.raw")
	if err := os.WriteFile(secret, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &opEnv{m: &Manager{cfg: Config{DiskDir: vms}}, id: "vm1"}
	vmDisk := func(name string, args ...string) string {
		p := filepath.Join(vms, name)
		qemuImg(t, append(append([]string{"create", "-q", "-f", "qcow2"}, args...), p, "16M")...)
		return p
	}
	for _, tt := range []struct {
		name       string
		rec        record
		want, fmt_ string
		refused    bool
	}{
		{"recorded", record{Disk: "/nowhere", Base: base, BaseFormat: "qcow2"}, base, "qcow2", false},
		{"legacy, in the cache", record{Disk: vmDisk("a.qcow2", "-F", "qcow2", "-b", base)}, base, "qcow2", false},
		{"legacy, no backing", record{Disk: vmDisk("b.qcow2")}, "", "", false},
		{"legacy, host file", record{Disk: vmDisk("c.qcow2", "-F", "raw", "-b", secret)}, "", "", true},
		{"legacy, escapes the cache", record{Disk: vmDisk("d.qcow2", "-F", "qcow2", "-b", images+"/../images/base.qcow2")}, "", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, format, err := e.base(&tt.rec)
			if tt.refused {
				var me *messages.Error
				if !errors.As(err, &me) || me.Code != "vm_disk_invalid" {
					t.Fatalf("base = %q, %v; want vm_disk_invalid", got, err)
				}
				return
			}
			if err != nil || got != tt.want || format != tt.fmt_ {
				t.Fatalf("base = %q %q, %v; want %q %q", got, format, err, tt.want, tt.fmt_)
			}
		})
	}
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}
