package cloudinit

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// readSeed opens the image with go-diskfs and returns its files by name.
func readSeed(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := iso9660.Read(file.New(f, true), st.Size(), 0, 2048)
	if err != nil {
		t.Fatalf("read iso: %v", err)
	}
	// The label must be space padded, not NUL padded.
	if got := strings.TrimRight(fsys.Label(), " "); got != volumeLabel {
		t.Errorf("label = %q, want %q", got, volumeLabel)
	}
	entries, err := fsys.ReadDir(".")
	if err != nil {
		t.Fatalf("readdir: %v", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		fl, err := fsys.OpenFile(e.Name(), os.O_RDONLY)
		if err != nil {
			t.Fatalf("open %s: %v", e.Name(), err)
		}
		b, err := io.ReadAll(fl)
		if err != nil {
			t.Fatalf("read %s: %v", e.Name(), err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func TestWriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seed.iso")
	netcfg := []byte("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")
	seed := Seed{
		InstanceID:    "i-0123",
		Hostname:      "web-1",
		UserData:      "#cloud-config\npackages: [htop]\n",
		NetworkConfig: netcfg,
	}
	if err := Write(path, seed); err != nil {
		t.Fatalf("Write: %v", err)
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 1<<20 {
		t.Errorf("size = %d, want %d", st.Size(), 1<<20)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}

	files := readSeed(t, path)
	want := map[string]string{
		"meta-data":      "instance-id: \"i-0123\"\nlocal-hostname: \"web-1\"\n",
		"user-data":      seed.UserData,
		"network-config": string(netcfg),
	}
	for name, body := range want {
		if files[name] != body {
			t.Errorf("%s = %q, want %q", name, files[name], body)
		}
	}
	if len(files) != len(want) {
		t.Errorf("files = %v, want exactly %d", files, len(want))
	}

	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestWriteIsoinfo(t *testing.T) {
	isoinfo, err := exec.LookPath("isoinfo")
	if err != nil {
		t.Skip("isoinfo not installed; skipping the external check of the volume descriptors")
	}
	path := filepath.Join(t.TempDir(), "seed.iso")
	if err := Write(path, Seed{InstanceID: "i-1", Hostname: "h"}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	out, err := exec.Command(isoinfo, "-d", "-i", path).CombinedOutput()
	if err != nil {
		t.Fatalf("isoinfo -d: %v\n%s", err, out)
	}
	info := string(out)
	if !strings.Contains(info, "Volume id: cidata") {
		t.Errorf("volume id is not cidata:\n%s", info)
	}
	if !strings.Contains(info, "Joliet with UCS level") {
		t.Errorf("no Joliet descriptor:\n%s", info)
	}
	if !strings.Contains(info, "Rock Ridge") {
		t.Errorf("no Rock Ridge signature:\n%s", info)
	}

	// Listing through Joliet proves the supplementary tree is readable, not
	// just announced.
	out, err = exec.Command(isoinfo, "-J", "-f", "-i", path).CombinedOutput()
	if err != nil {
		t.Fatalf("isoinfo -J -f: %v\n%s", err, out)
	}
	for _, name := range []string{"/meta-data", "/user-data"} {
		if !strings.Contains(string(out), name) {
			t.Errorf("Joliet listing lacks %s:\n%s", name, out)
		}
	}
	if strings.Contains(string(out), "network-config") {
		t.Errorf("network-config written without NetworkConfig:\n%s", out)
	}
}

func TestWriteEmptyUserData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.iso")
	if err := Write(path, Seed{InstanceID: "i-1", Hostname: "h"}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got := readSeed(t, path)["user-data"]; got != emptyUserData {
		t.Errorf("user-data = %q, want %q", got, emptyUserData)
	}
}

func TestWriteRejects(t *testing.T) {
	tests := []struct {
		name string
		seed Seed
		want error
		msg  string
	}{
		{"no instance id", Seed{Hostname: "h"}, ErrInvalidSeed, "instance id"},
		{"no hostname", Seed{InstanceID: "i"}, ErrInvalidSeed, "hostname"},
		{"hostname with dot", Seed{InstanceID: "i", Hostname: "a.b"}, ErrInvalidSeed, "hostname"},
		{"hostname leading dash", Seed{InstanceID: "i", Hostname: "-a"}, ErrInvalidSeed, "hostname"},
		{"hostname too long", Seed{InstanceID: "i", Hostname: strings.Repeat("a", 64)}, ErrInvalidSeed, "hostname"},
		{"instance id newline", Seed{InstanceID: "i\nx", Hostname: "h"}, ErrInvalidSeed, "instance id"},
		{"user-data over limit", Seed{InstanceID: "i", Hostname: "h", UserData: strings.Repeat("x", MaxUserData+1)}, ErrUserDataTooLarge, "65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "seed.iso")
			err := Write(path, tt.seed)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.msg)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Errorf("files left after refusal: %v", entries)
			}
		})
	}
}

func TestWriteUserDataAtLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.iso")
	ud := "#cloud-config\n" + strings.Repeat("#", MaxUserData-len("#cloud-config\n"))
	if err := Write(path, Seed{InstanceID: "i", Hostname: "h", UserData: ud}); err != nil {
		t.Fatalf("Write at the limit: %v", err)
	}
	if got := readSeed(t, path)["user-data"]; got != ud {
		t.Errorf("user-data round trip lost bytes: got %d, want %d", len(got), len(ud))
	}
}

func TestWriteReplacesExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed.iso")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, Seed{InstanceID: "i-2", Hostname: "h2"}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got := readSeed(t, path)["meta-data"]; !strings.Contains(got, `"i-2"`) {
		t.Errorf("meta-data = %q, want the new instance id", got)
	}
}
