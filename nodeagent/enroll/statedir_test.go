package enroll

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/security"
)

// enrolled returns a state dir holding a fresh identity for node hv1.
func enrolled(t *testing.T) string {
	t.Helper()
	ca := newCA(t)
	f := startFake(t, ca, ca)
	opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")
	if _, err := Bootstrap(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	return opts.StateDir
}

func TestLoadStateRefusesInconsistentDir(t *testing.T) {
	otherKey, _, err := security.NewNodeKeyAndCSR("hv1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
	}{
		{"key of another pair", func(t *testing.T, dir string) {
			if err := security.WriteKeyFile(filepath.Join(dir, KeyFile), otherKey); err != nil {
				t.Fatal(err)
			}
		}, "private key does not match"},
		{"name not the cert's CN", func(t *testing.T, dir string) {
			rewrite(t, filepath.Join(dir, ConfigFile), "node_name: hv1", "node_name: hv2")
		}, `is for node "hv1"`},
		{"ca fingerprint not ca.pem's", func(t *testing.T, dir string) {
			rewrite(t, filepath.Join(dir, ConfigFile), "ca_fingerprint: ", "ca_fingerprint: 00")
		}, "has fingerprint"},
		{"key readable by others", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "want 0600"},
		{"missing cert", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
				t.Fatal(err)
			}
		}, CertFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := enrolled(t)
			tc.break_(t, dir)
			_, err := LoadState(dir)
			if !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadState err = %v, want ErrInvalidState containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadStateNotEnrolled(t *testing.T) {
	if _, err := LoadState(t.TempDir()); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("err = %v, want ErrNotEnrolled", err)
	}
}

func TestBootstrapRefusesBrokenStateWithoutForce(t *testing.T) {
	dir := enrolled(t)
	rewrite(t, filepath.Join(dir, ConfigFile), "node_name: hv1", "node_name: hv2")
	ca := newCA(t)
	f := startFake(t, ca, ca)
	opts := options(t, f, joinToken(t, ca.Fingerprint()), "hv1")
	opts.StateDir = dir
	if _, err := Bootstrap(context.Background(), opts); !errors.Is(err, ErrIdentityConflict) || !errors.Is(err, ErrInvalidState) {
		t.Fatalf("err = %v, want ErrIdentityConflict wrapping ErrInvalidState", err)
	}
	if f.requests.Load() != 0 {
		t.Error("refusal made requests")
	}
	opts.Force = true
	if _, err := Bootstrap(context.Background(), opts); err != nil {
		t.Fatalf("forced Bootstrap: %v", err)
	}
	if _, err := LoadState(dir); err != nil {
		t.Fatalf("LoadState after force: %v", err)
	}
}

func rewrite(t *testing.T, path, old, new string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	if !strings.Contains(s, old) {
		t.Fatalf("%s has no %q:\n%s", path, old, s)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(s, old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}
