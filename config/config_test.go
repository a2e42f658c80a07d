package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

type adminConfig struct {
	Email    string `koanf:"email"`
	Password string `koanf:"password"`
}

type heartbeatConfig struct {
	Interval time.Duration `koanf:"interval"`
}

type testConfig struct {
	DataDir     string            `koanf:"data_dir"`
	Listen      string            `koanf:"listen"`
	AgentListen string            `koanf:"agent_listen"`
	Workers     int               `koanf:"workers"`
	Debug       bool              `koanf:"debug"`
	Admin       adminConfig       `koanf:"admin"`
	Heartbeat   heartbeatConfig   `koanf:"heartbeat"`
	Labels      map[string]string `koanf:"labels"`
	Bind        netip.Addr        `koanf:"bind"` // a struct that decodes from text
}

func defaults() testConfig {
	return testConfig{
		DataDir:   "/var/lib/otherix",
		Listen:    "127.0.0.1:7080",
		Workers:   4,
		Admin:     adminConfig{Email: "admin@localhost"},
		Heartbeat: heartbeatConfig{Interval: 30 * time.Second},
		Labels:    map[string]string{"tier": "default"},
		Bind:      netip.MustParseAddr("127.0.0.1"),
	}
}

// flagKeys is the mapping a command would pass; --config is deliberately
// absent because it names the file rather than a setting.
var flagKeys = map[string]string{
	"data-dir":           "data_dir",
	"listen":             "listen",
	"workers":            "workers",
	"heartbeat-interval": "heartbeat.interval",
}

func newFlags(t *testing.T, args []string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	// Flag defaults differ from the struct defaults on purpose: an
	// unchanged flag must not leak its default over any other source.
	fs.String("data-dir", "/flag/default", "")
	fs.String("listen", "0.0.0.0:1", "")
	fs.Int("workers", 99, "")
	fs.Duration("heartbeat-interval", time.Hour, "")
	fs.String("config", "", "")
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse flags: %v", err)
	}
	return fs
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string   // written to a temp file when non-empty
		env     []string // KEY=VALUE
		args    []string
		want    func(*testConfig) // edits defaults() into the expected value
		wantErr string            // substring; the path of the temp file is "FILE"
	}{
		{
			name: "defaults only",
			want: func(*testConfig) {},
		},
		{
			name: "file overrides defaults and keeps the rest",
			yaml: "listen: 0.0.0.0:8443\nadmin:\n  password: hunter2\n",
			want: func(c *testConfig) {
				c.Listen = "0.0.0.0:8443"
				c.Admin.Password = "hunter2"
			},
		},
		{
			name: "environment overrides file",
			yaml: "listen: 0.0.0.0:8443\ndata_dir: /from/file\n",
			env:  []string{"OTHERIX_LISTEN=10.0.0.1:9000"},
			want: func(c *testConfig) {
				c.Listen = "10.0.0.1:9000"
				c.DataDir = "/from/file"
			},
		},
		{
			name: "changed flag overrides environment and file",
			yaml: "data_dir: /from/file\n",
			env:  []string{"OTHERIX_DATA_DIR=/from/env"},
			args: []string{"--data-dir", "/from/flag"},
			want: func(c *testConfig) { c.DataDir = "/from/flag" },
		},
		{
			name: "unchanged flags override nothing",
			yaml: "workers: 8\n",
			env:  []string{"OTHERIX_DATA_DIR=/from/env"},
			args: []string{"--config", "ignored.yaml"},
			want: func(c *testConfig) {
				c.DataDir = "/from/env"
				c.Workers = 8
			},
		},
		{
			name: "nested environment with double underscore",
			env: []string{
				"OTHERIX_ADMIN__EMAIL=ops@example.com",
				"OTHERIX_HEARTBEAT__INTERVAL=5s",
				"OTHERIX_AGENT_LISTEN=0.0.0.0:7443",
				"OTHERIX_LABELS__ZONE=a",
			},
			want: func(c *testConfig) {
				c.Admin.Email = "ops@example.com"
				c.Heartbeat.Interval = 5 * time.Second
				c.AgentListen = "0.0.0.0:7443"
				c.Labels = map[string]string{"tier": "default", "zone": "a"}
			},
		},
		{
			name: "durations decode from file, environment and flags",
			yaml: "heartbeat:\n  interval: 45s\n",
			want: func(c *testConfig) { c.Heartbeat.Interval = 45 * time.Second },
		},
		{
			name: "duration flag beats duration environment",
			env:  []string{"OTHERIX_HEARTBEAT__INTERVAL=2m"},
			args: []string{"--heartbeat-interval=90s"},
			want: func(c *testConfig) { c.Heartbeat.Interval = 90 * time.Second },
		},
		{
			name: "environment strings decode into ints and bools",
			env:  []string{"OTHERIX_WORKERS=16", "OTHERIX_DEBUG=true"},
			want: func(c *testConfig) {
				c.Workers = 16
				c.Debug = true
			},
		},
		{
			name: "unknown and unprefixed environment is ignored",
			env: []string{
				"OTHERIX_CONFIG=/home/me/.otherix/config",
				"OTHERIX_NOPE__DEEP=1",
				"OTHERIX_ADMIN=flat",
				"DATA_DIR=/not/ours",
				"otherix_listen=lowercase-prefix",
			},
			want: func(*testConfig) {},
		},
		{
			name: "text-unmarshalable struct is a leaf",
			yaml: "bind: 10.0.0.1\n",
			env:  []string{"OTHERIX_BIND=::1"},
			want: func(c *testConfig) { c.Bind = netip.MustParseAddr("::1") },
		},
		{
			name: "map field accepts any key in the file",
			yaml: "labels:\n  rack: r12\n",
			want: func(c *testConfig) { c.Labels = map[string]string{"tier": "default", "rack": "r12"} },
		},
		{
			name:    "unknown top-level key in file names key and file",
			yaml:    "listn: 0.0.0.0:1\n",
			wantErr: `config: FILE: unknown key "listn"`,
		},
		{
			name:    "unknown nested keys are all named",
			yaml:    "admin:\n  emial: x\nzzz: 1\n",
			wantErr: `config: FILE: unknown keys "admin.emial", "zzz"`,
		},
		{
			name:    "bad duration is an error",
			env:     []string{"OTHERIX_HEARTBEAT__INTERVAL=soon"},
			wantErr: "heartbeat.interval",
		},
		{
			name:    "malformed yaml is an error naming the file",
			yaml:    "listen: [\n",
			wantErr: "config: FILE:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{
				Defaults:  defaults(),
				EnvPrefix: "OTHERIX_",
				Environ:   func() []string { return tt.env },
				Flags:     newFlags(t, tt.args),
				FlagKeys:  flagKeys,
			}
			if tt.yaml != "" {
				opts.File = filepath.Join(t.TempDir(), "api.yaml")
				if err := os.WriteFile(opts.File, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var got testConfig
			err := Load(&got, opts)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "FILE", opts.File)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Load() error = %v, want one containing %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			want := defaults()
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Load() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnknownKeyErrorIs(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(path, []byte("listn: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got testConfig
	err := Load(&got, Options{Defaults: defaults(), File: path})
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("errors.Is(%v, ErrUnknownKey) = false", err)
	}
	var uk *UnknownKeyError
	if !errors.As(err, &uk) || uk.File != path || len(uk.Keys) != 1 || uk.Keys[0] != "listn" {
		t.Fatalf("errors.As = %+v, want File %q Keys [listn]", uk, path)
	}
	// Nothing from a rejected file may reach the target.
	if got.Listen != "" {
		t.Fatalf("target written on error: %+v", got)
	}
}

func TestLoadInvalidOptions(t *testing.T) {
	t.Parallel()
	fs := newFlags(t, nil)
	tests := []struct {
		name    string
		into    any
		opts    Options
		wantErr string
	}{
		{"target not a pointer", testConfig{}, Options{}, "non-nil pointer to a struct"},
		{"target nil pointer", (*testConfig)(nil), Options{}, "non-nil pointer to a struct"},
		{"missing file", &testConfig{}, Options{File: "/nonexistent/api.yaml"}, "config: /nonexistent/api.yaml:"},
		{"defaults not a struct", &testConfig{}, Options{Defaults: 3}, "defaults must be a struct"},
		{"defaults key not in target", &testConfig{}, Options{Defaults: struct {
			Extra string `koanf:"extra"`
		}{"x"}}, `defaults: key "extra"`},
		{"flag key maps to unknown key", &testConfig{}, Options{Flags: fs, FlagKeys: map[string]string{"listen": "lisen"}}, `maps to unknown key "lisen"`},
		{"flag key names no flag", &testConfig{}, Options{Flags: fs, FlagKeys: map[string]string{"nope": "listen"}}, `no flag named "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Load(tt.into, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestDefaultsNotMutated guards the copy in flatten: koanf merges later
// sources into maps it holds, and a shared map would leak one Load's file
// into the next Load's defaults.
func TestDefaultsNotMutated(t *testing.T) {
	t.Parallel()
	d := defaults()
	path := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(path, []byte("labels:\n  rack: r1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got testConfig
	if err := Load(&got, Options{Defaults: &d, File: path}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"tier": "default"}, d.Labels); diff != "" {
		t.Errorf("defaults map changed (-want +got):\n%s", diff)
	}
}

func TestEnvKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"OTHERIX_DATA_DIR":            "data_dir",
		"OTHERIX_ADMIN__EMAIL":        "admin.email",
		"OTHERIX_HEARTBEAT__INTERVAL": "heartbeat.interval",
		"OTHERIX_A__B_C__D":           "a.b_c.d",
	} {
		if got := envKey("OTHERIX_", in); got != want {
			t.Errorf("envKey(%q) = %q, want %q", in, got, want)
		}
	}
}
