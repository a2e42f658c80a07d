package cloudinit

import (
	"errors"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzSeed renders a seed from what a user controls (user-data; the VM
// name becomes the hostname) and reads the ISO back: a seed is either
// refused with ErrInvalidSeed/ErrUserDataTooLarge, or its user-data is
// byte for byte what was given and its meta-data is YAML with exactly the
// instance id and hostname, so no input can inject another key.
func FuzzSeed(f *testing.F) {
	f.Add("01m98e052eejs56yyvev947m5q", "web-1", "#cloud-config\nruncmd:\n  - [sh, -c, 'echo hi']\n")
	f.Add("id\nlocal-hostname: evil", "a", "")
	f.Add(`"x": y`, "b", "#!/bin/sh\necho \x00\xff")
	f.Add("i", "-bad-", "x")
	f.Fuzz(func(t *testing.T, id, host, userData string) {
		s := Seed{InstanceID: id, Hostname: host, UserData: userData}
		path := filepath.Join(t.TempDir(), "seed.iso")
		if err := Write(path, s); err != nil {
			if !errors.Is(err, ErrInvalidSeed) && !errors.Is(err, ErrUserDataTooLarge) {
				t.Fatalf("Write: %v", err)
			}
			return
		}
		files := readSeed(t, path)
		want := userData
		if want == "" {
			want = emptyUserData
		}
		if files["user-data"] != want {
			t.Fatalf("user-data changed: %q -> %q", want, files["user-data"])
		}
		var meta map[string]string
		if err := yaml.Unmarshal([]byte(files["meta-data"]), &meta); err != nil {
			t.Fatalf("meta-data is not YAML: %v\n%s", err, files["meta-data"])
		}
		if len(meta) != 2 || meta["instance-id"] != id || meta["local-hostname"] != host {
			t.Fatalf("meta-data %q for id %q host %q", meta, id, host)
		}
	})
}
