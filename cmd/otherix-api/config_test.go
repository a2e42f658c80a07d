package main

import (
	"os"
	"path/filepath"
	"testing"
)

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
