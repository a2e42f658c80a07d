package capacity

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const meminfo = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n"

func fake(t *testing.T, kvmErr error) *Prober {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(path, []byte(meminfo), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Prober{
		MeminfoPath: path,
		KVMPath:     "/dev/kvm",
		NumCPU:      func() int { return 8 },
		OpenKVM:     func(string) error { return kvmErr },
		KVMBoots: func(context.Context) (time.Duration, time.Duration, error) {
			return 0, 0, errNoProbe
		},
	}
}

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		accel     string
		kvmErr    error
		wantKVM   bool
		wantAccel string
		reason    string
		wantErr   bool
	}{
		{"auto", nil, false, "tcg", ReasonUnverified, false},
		{"auto", os.ErrNotExist, false, "tcg", "/dev/kvm does not exist", false},
		{"auto", os.ErrPermission, false, "tcg", "permission denied", false},
		{"kvm", nil, true, "kvm", ReasonForcedKVM, false},
		{"kvm", os.ErrNotExist, false, "", "", true},
		{"tcg", nil, false, "tcg", ReasonForcedTCG, false},
		{"tcg", os.ErrNotExist, false, "tcg", "does not exist", false},
		{"hvf", nil, false, "", "", true},
	} {
		c, err := fake(t, tc.kvmErr).Probe(tc.accel)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s/%v: err = %v", tc.accel, tc.kvmErr, err)
			continue
		}
		if tc.wantErr {
			continue
		}
		if c.CPUs != 8 || c.MemoryMiB != 16318412/1024 || c.KVM != tc.wantKVM || c.Accelerator != tc.wantAccel || !strings.Contains(c.KVMReason, tc.reason) {
			t.Errorf("%s/%v: got %+v", tc.accel, tc.kvmErr, c)
		}
	}
}

// TestAutoFollowsTheBootProbe: auto takes KVM only when the probe boots
// under it, and no slower than under TCG.
func TestAutoFollowsTheBootProbe(t *testing.T) {
	for _, tc := range []struct {
		name      string
		kvm, tcg  time.Duration
		err       error
		wantAccel string
		reason    string
	}{
		{"fast kvm", 80 * time.Millisecond, 300 * time.Millisecond, nil, "kvm", "kvm verified"},
		{"kvm slower than tcg", 6 * time.Second, 300 * time.Millisecond, nil, "tcg", "slower than tcg"},
		{"kvm never boots", 0, 300 * time.Millisecond, ErrProbeNoMarker, "tcg", "did not boot"},
		{"no probe here", 0, 0, errNoProbe, "tcg", ReasonUnverified},
	} {
		p := fake(t, nil)
		p.KVMBoots = func(context.Context) (time.Duration, time.Duration, error) { return tc.kvm, tc.tcg, tc.err }
		c, err := p.Probe("auto")
		if err != nil || c.Accelerator != tc.wantAccel || c.KVM != (tc.wantAccel == "kvm") || !strings.Contains(c.KVMReason, tc.reason) {
			t.Errorf("%s: %+v %v", tc.name, c, err)
		}
	}
}

// TestBootProbePayload boots the committed payload under TCG: it must reach
// long mode and print its marker, or the probe would call every host's
// KVM broken.
func TestBootProbePayload(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("OTHERIX_REQUIRE_QEMU") == "1" {
			t.Fatal(err)
		}
		t.Skip("qemu-system-x86_64 not installed")
	}
	took, err := BootProbe(context.Background(), qemu, AccelTCG, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe booted under tcg in %s", took)
}

// TestBootProbePayloadMatchesSource reassembles kvmprobe.S when binutils is
// here, so the committed bytes cannot drift from the source.
func TestBootProbePayloadMatchesSource(t *testing.T) {
	if _, err := exec.LookPath("as"); err != nil {
		t.Skip("binutils not installed")
	}
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "p.o"), filepath.Join(dir, "p.bin")
	if out, err := exec.Command("as", "--64", "-o", obj, "kvmprobe.S").CombinedOutput(); err != nil {
		t.Fatalf("as: %v\n%s", err, out)
	}
	if out, err := exec.Command("objcopy", "-O", "binary", "-j", ".text", obj, bin).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, kvmProbeImage) || len(got) != 512 || got[510] != 0x55 || got[511] != 0xAA {
		t.Fatal("kvmprobe.bin does not match kvmprobe.S; rebuild it (see the top of kvmprobe.S)")
	}
}

func TestProbeMissingMeminfo(t *testing.T) {
	p := fake(t, nil)
	p.MeminfoPath = filepath.Join(t.TempDir(), "none")
	if _, err := p.Probe("auto"); err == nil {
		t.Fatal("want error for missing meminfo")
	}
}

func TestParseMemTotal(t *testing.T) {
	if n, err := ParseMemTotalMiB([]byte("MemFree: 1 kB\nMemTotal: 2097152 kB\n")); err != nil || n != 2048 {
		t.Fatalf("= %d, %v", n, err)
	}
	for _, bad := range []string{"", "MemFree: 1 kB\n", "MemTotal: x kB\n", "MemTotal: 1 GB\n"} {
		if _, err := ParseMemTotalMiB([]byte(bad)); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func TestQEMUVersions(t *testing.T) {
	var deadlines []bool
	p := &Prober{
		LookPath: func(name string) (string, error) {
			if name == "qemu-system-aarch64" {
				return "", errors.New("not found")
			}
			return "/usr/bin/" + name, nil
		},
		Run: func(ctx context.Context, path string, args ...string) ([]byte, error) {
			dl, ok := ctx.Deadline()
			deadlines = append(deadlines, ok && time.Until(dl) <= ExecTimeout)
			if path != "/usr/bin/qemu-system-x86_64" || !reflect.DeepEqual(args, []string{"--version"}) {
				t.Errorf("run %s %v", path, args)
			}
			return []byte("QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7)\nCopyright (c) 2003-2022\n"), nil
		},
	}
	got := p.QEMUVersions(context.Background())
	if want := []string{"QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7)"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("= %q, want %q", got, want)
	}
	if !reflect.DeepEqual(deadlines, []bool{true}) {
		t.Fatalf("run deadlines = %v, want one bounded by ExecTimeout", deadlines)
	}

	none := &Prober{LookPath: func(string) (string, error) { return "", errors.New("no") }}
	if got := none.QEMUVersions(context.Background()); got == nil || len(got) != 0 {
		t.Fatalf("none = %#v, want empty non-nil", got)
	}
	failing := &Prober{
		LookPath: func(n string) (string, error) { return n, nil },
		Run:      func(context.Context, string, ...string) ([]byte, error) { return nil, errors.New("boom") },
	}
	if got := failing.QEMUVersions(context.Background()); got == nil || len(got) != 0 {
		t.Fatalf("failing = %#v, want empty non-nil", got)
	}
}
