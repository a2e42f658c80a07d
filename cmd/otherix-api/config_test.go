package main

import (
	"os"
	"path/filepath"
	"slices"
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

// TestReplicaSettings: the peer and join settings are read from flags and
// the environment, a joiner gets a default name, and inconsistent settings
// are refused naming the setting.
func TestReplicaSettings(t *testing.T) {
	t.Run("flags and env", testReplicaFlags)
	for yaml, key := range map[string]string{
		"join: https://a:7443\njoin_token: t\n":                    "peer_listen",
		"advertise: a:7380\n":                                      "peer_listen",
		"peer_listen: a\n":                                         "peer_listen",
		"peer_listen: a:7380\nadvertise: b\n":                      "advertise",
		"peer_listen: a:7380\njoin: https://a:7443\n":              "join_token",
		"peer_listen: a:7380\njoin: a:7443\njoin_token: t\n":       "join",
		"peer_listen: a:7380\netcd:\n  peer_url: https://a:7380\n": "etcd.peer_url",
	} {
		if _, err := loadYAML(t, "data_dir: /tmp/x\n"+yaml); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: %v, want an error naming %s", yaml, err, key)
		}
	}
}

func testReplicaFlags(t *testing.T) {
	flags := rootCommand().Flags()
	for k, v := range map[string]string{"data-dir": t.TempDir(), "peer-listen": "127.0.0.1:7380",
		"join": "https://127.0.0.1:7443", "join-token": "otxr_x@y"} {
		if err := flags.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("OTHERIX_ADVERTISE", "10.0.0.5:7380")
	cfg, err := loadConfig(flags)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PeerListen != "127.0.0.1:7380" || cfg.Advertise != "10.0.0.5:7380" || cfg.Join != "https://127.0.0.1:7443" ||
		cfg.JoinToken != "otxr_x@y" || !strings.HasSuffix(cfg.Etcd.Name, "-7380") {
		t.Fatalf("replica settings %+v, name %q", cfg, cfg.Etcd.Name)
	}
}

func TestPeerSANs(t *testing.T) {
	for _, c := range []struct {
		listen, adv string
		want        string
	}{
		{"127.0.0.1:7380", "", "127.0.0.1"},
		{"0.0.0.0:7380", "db1.example:7380", "db1.example"},
		{"[::]:7380", "", ""},
		{"10.0.0.1:7380", "10.0.0.1:7381", "10.0.0.1"},
		{"10.0.0.1:7380", "pub.example:7380", "10.0.0.1,pub.example"},
	} {
		if got := strings.Join(peerSANs(c.listen, c.adv), ","); got != c.want {
			t.Errorf("peerSANs(%q, %q) = %q, want %q", c.listen, c.adv, got, c.want)
		}
	}
}

// TestLoopOwnerTTL: the loop owner's lease TTL defaults to the election's,
// is read from the file, and a TTL under etcd's useful minimum is refused.
func TestLoopOwnerTTL(t *testing.T) {
	cfg, err := loadYAML(t, "data_dir: /tmp/x\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Loops.OwnerTTL != 10*time.Second {
		t.Fatalf("default loops.owner_ttl %s", cfg.Loops.OwnerTTL)
	}
	if cfg, err = loadYAML(t, "loops:\n  owner_ttl: 30s\n"); err != nil || cfg.Loops.OwnerTTL != 30*time.Second {
		t.Fatalf("loops.owner_ttl from the file: %s, %v", cfg.Loops.OwnerTTL, err)
	}
	if _, err := loadYAML(t, "loops:\n  owner_ttl: 500ms\n"); err == nil || !strings.Contains(err.Error(), "loops.owner_ttl") {
		t.Fatalf("a 500ms owner TTL: %v", err)
	}
}

// TestAdvertisedHostInSANs: whatever tls.sans and agent.sans say, each
// listener's certificate names the host this replica records for it (and
// clients and agents fail over to): the listen IP, or the host name for a
// wildcard listener.
func TestAdvertisedHostInSANs(t *testing.T) {
	host, _ := os.Hostname()
	host = strings.ToLower(host)
	for _, c := range []struct {
		yaml      string
		rest, agt string // a SAN each must hold
	}{
		{"listen: 10.9.8.7:7080\nagent_listen: 10.9.8.7:7443\ntls:\n  sans: [api.example]\nagent:\n  sans: [agents.example]\n", "10.9.8.7", "10.9.8.7"},
		{"listen: 0.0.0.0:7080\nagent_listen: '[::]:7443'\ntls:\n  sans: [api.example]\nagent:\n  sans: [agents.example]\n", host, host},
	} {
		cfg, err := loadYAML(t, "data_dir: /tmp/x\n"+c.yaml)
		if err != nil {
			t.Fatal(err)
		}
		if !validDNSName(host) && c.rest == host {
			continue // a host name no certificate can carry is left out
		}
		for _, want := range []struct {
			sans      []string
			kept, san string
			url       string
		}{{cfg.TLS.SANs, "api.example", c.rest, serviceURL(true, cfg.Listen)}, {cfg.Agent.SANs, "agents.example", c.agt, serviceURL(true, cfg.AgentListen)}} {
			if !slices.Contains(want.sans, want.kept) || !slices.Contains(want.sans, want.san) {
				t.Errorf("%q: sans %v, want %q and %q", c.yaml, want.sans, want.kept, want.san)
			}
			if !strings.Contains(strings.ToLower(want.url), "//"+want.san+":") {
				t.Errorf("recorded URL %s does not name %s", want.url, want.san)
			}
		}
	}
}

// TestWatchLimits: the watch limits have their documented defaults, are read
// from the file, and a value that could not serve is refused naming its key.
func TestWatchLimits(t *testing.T) {
	cfg, err := loadYAML(t, "data_dir: /tmp/x\n")
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Watch; w.MaxClients != 4096 || w.PerUser != 16 || w.Buffer != 1024 || w.Bookmark != 15*time.Second || w.AuthCheck != time.Minute {
		t.Fatalf("defaults: %+v", w)
	}
	cfg, err = loadYAML(t, "watch:\n  max_clients: 100\n  per_user: 4\n  buffer: 64\n  bookmark: 5s\n  auth_check: 30s\n")
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Watch; w.MaxClients != 100 || w.PerUser != 4 || w.Buffer != 64 || w.Bookmark != 5*time.Second || w.AuthCheck != 30*time.Second {
		t.Fatalf("from the file: %+v", w)
	}
	for yaml, key := range map[string]string{
		"watch:\n  max_clients: 0\n":                "watch.max_clients",
		"watch:\n  max_clients: 8\n  per_user: 9\n": "watch.per_user",
		"watch:\n  per_user: 0\n":                   "watch.per_user",
		"watch:\n  buffer: 1\n":                     "watch.buffer",
		"watch:\n  bookmark: 10ms\n":                "watch.bookmark",
		"watch:\n  auth_check: 0s\n":                "watch.auth_check",
	} {
		if _, err := loadYAML(t, yaml); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: %v, want an error naming %s", yaml, err, key)
		}
	}
}
