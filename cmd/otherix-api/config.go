package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/otherix/otherix/config"
)

// apiConfig is every setting of otherix-api. Keys are the YAML keys; the
// environment uses OTHERIX_ plus the key in upper case, with __ for nesting.
type apiConfig struct {
	// DataDir holds etcd's data and, by default, the snapshots.
	DataDir string `koanf:"data_dir"`
	// Listen is the REST listener.
	Listen string `koanf:"listen"`
	Etcd   struct {
		Name      string `koanf:"name"`
		PeerURL   string `koanf:"peer_url"`
		ClientURL string `koanf:"client_url"`
		MaxTxnOps uint   `koanf:"max_txn_ops"`
	} `koanf:"etcd"`
	Jobs struct {
		// Dispatch false makes this replica serve the API without claiming jobs.
		Dispatch    bool          `koanf:"dispatch"`
		ClaimTTL    time.Duration `koanf:"claim_ttl"`
		Attempts    int           `koanf:"attempts"`
		BackoffBase time.Duration `koanf:"backoff_base"`
		BackoffMax  time.Duration `koanf:"backoff_max"`
	} `koanf:"jobs"`
	Tasks struct {
		Retention time.Duration `koanf:"retention"`
	} `koanf:"tasks"`
	Backup struct {
		Dir      string        `koanf:"dir"`
		Interval time.Duration `koanf:"interval"`
		Keep     int           `koanf:"keep"`
	} `koanf:"backup"`
	// Admin is the first admin, created at first boot only (when the cluster
	// has no user). An empty password is generated and printed once.
	Admin struct {
		Email    string `koanf:"email"`
		Password string `koanf:"password"`
	} `koanf:"admin"`
	Audit struct {
		Retention time.Duration `koanf:"retention"`
	} `koanf:"audit"`
	HTTP struct {
		MaxBodyBytes int64 `koanf:"max_body_bytes"`
		Metrics      bool  `koanf:"metrics"`
		// MetricsPublic serves /metrics without authentication (for scrapers).
		MetricsPublic bool `koanf:"metrics_public"`
	} `koanf:"http"`
	Log struct {
		Level  string `koanf:"level"`
		Format string `koanf:"format"`
	} `koanf:"log"`
}

func defaultConfig() apiConfig {
	var c apiConfig
	c.DataDir = "/var/lib/otherix"
	// Loopback until the API serves TLS with the cluster CA and requires
	// authentication; binding wider is an explicit choice.
	c.Listen = "127.0.0.1:7080"
	c.Etcd.MaxTxnOps = 128
	c.Jobs.Dispatch = true
	c.Jobs.ClaimTTL = 10 * time.Second
	c.Jobs.Attempts = 5
	c.Jobs.BackoffBase = 2 * time.Second
	c.Jobs.BackoffMax = time.Minute
	c.Tasks.Retention = 7 * 24 * time.Hour
	c.Backup.Interval = time.Hour
	c.Backup.Keep = 24
	c.Admin.Email = "admin@localhost"
	c.Audit.Retention = 30 * 24 * time.Hour
	c.HTTP.MaxBodyBytes = 1 << 20
	c.HTTP.Metrics = true
	c.HTTP.MetricsPublic = true
	c.Log.Level = "info"
	c.Log.Format = "text"
	return c
}

func loadConfig(flags *pflag.FlagSet) (apiConfig, error) {
	cfg := defaultConfig()
	file, _ := flags.GetString("config")
	err := config.Load(&cfg, config.Options{
		Defaults:  defaultConfig(),
		File:      file,
		EnvPrefix: "OTHERIX_",
		Flags:     flags,
		FlagKeys:  map[string]string{"data-dir": "data_dir", "listen": "listen"},
	})
	if err != nil {
		return cfg, err
	}
	if cfg.DataDir == "" {
		return cfg, fmt.Errorf("data_dir must be set")
	}
	if cfg.Backup.Dir == "" {
		cfg.Backup.Dir = cfg.DataDir + "/backups"
	}
	return cfg, nil
}
