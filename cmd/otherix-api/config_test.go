package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadYAML(t *testing.T, yaml string) (apiConfig, error) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := rootCommand().Flags()
	if err := flags.Set("config", conf); err != nil {
		t.Fatal(err)
	}
	return loadConfig(flags)
}

// TestStoreSpaceKeys: the space settings have their documented defaults,
// are read from the file, and a bad value is refused naming its key.
func TestStoreSpaceKeys(t *testing.T) {
	cfg, err := loadYAML(t, "data_dir: /tmp/x\n")
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Etcd
	if e.QuotaBytes != 8<<30 || e.AutoCompactionMode != "periodic" || e.AutoCompactionRetention != "1h" ||
		e.SpaceCheckInterval != time.Minute || e.DefragMinFreeBytes != 16<<20 {
		t.Fatalf("defaults: %+v", e)
	}
	cfg, err = loadYAML(t, "etcd:\n  quota_bytes: 2147483648\n  auto_compaction_mode: revision\n  auto_compaction_retention: \"10000\"\n  space_check_interval: 30s\n")
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Etcd; e.QuotaBytes != 2<<30 || e.AutoCompactionMode != "revision" || e.AutoCompactionRetention != "10000" || e.SpaceCheckInterval != 30*time.Second {
		t.Fatalf("from the file: %+v", e)
	}
	for yaml, key := range map[string]string{
		"etcd:\n  space_check_interval: 10ms\n":  "etcd.space_check_interval",
		"etcd:\n  defrag_min_free_bytes: -1\n":   "etcd.defrag_min_free_bytes",
		"etcd:\n  quota_byte: 1\n":               "quota_byte",
		"etcd:\n  auto_compaction_mode: daily\n": "etcd.auto_compaction_mode",
		"etcd:\n  quota_bytes: 1000\n":           "etcd.quota_bytes",
	} {
		if _, err := loadYAML(t, yaml); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: %v, want an error naming %s", yaml, err, key)
		}
	}
}

// TestLoadConfigMakesPathsAbsolute: make dev passes --data-dir .dev; the
// member, the PKI and the backup loop must keep absolute paths whichever
// source (flag, environment, file) named a relative one.
func TestLoadConfigMakesPathsAbsolute(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	if err := os.WriteFile("otherix.yaml", []byte("backup:\n  dir: snaps\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name            string
		args            []string
		env             string
		wantData, wantB string
	}{
		{"flag", []string{"--data-dir", ".dev"}, "", filepath.Join(cwd, ".dev"), filepath.Join(cwd, ".dev", "backups")},
		{"env", nil, "data", filepath.Join(cwd, "data"), filepath.Join(cwd, "data", "backups")},
		{"file backup dir", []string{"--data-dir", "/var/lib/x", "--config", "otherix.yaml"}, "", "/var/lib/x", filepath.Join(cwd, "snaps")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OTHERIX_DATA_DIR", tc.env)
			if tc.env == "" {
				os.Unsetenv("OTHERIX_DATA_DIR")
			}
			cmd := rootCommand()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DataDir != tc.wantData || cfg.Backup.Dir != tc.wantB {
				t.Fatalf("data_dir %q, backup.dir %q; want %q, %q", cfg.DataDir, cfg.Backup.Dir, tc.wantData, tc.wantB)
			}
		})
	}
}
