package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/otherix/otherix/actors/maintenance"
	"github.com/otherix/otherix/actors/placement"
	"github.com/otherix/otherix/config"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/persistence/election"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/watch"
)

// apiConfig is every setting of otherix-api. Keys are the YAML keys; the
// environment uses OTHERIX_ plus the key in upper case, with __ for nesting.
type apiConfig struct {
	// DataDir holds etcd's data and, by default, the snapshots.
	DataDir string `koanf:"data_dir"`
	// Listen is the REST listener.
	Listen string `koanf:"listen"`
	TLS    struct {
		// Enabled serves the REST listener over HTTPS with a certificate of
		// the cluster CA; false serves plain HTTP (credentials in clear).
		Enabled bool `koanf:"enabled"`
		// SANs are the names and addresses clients may dial the REST
		// listener by; empty means defaultRESTSANs.
		SANs []string `koanf:"sans"`
	} `koanf:"tls"`
	// AgentListen is the agent-facing HTTPS listener (enrollment, and later
	// heartbeats), served with a certificate of the cluster CA.
	AgentListen string `koanf:"agent_listen"`
	Agent       struct {
		// SANs are the names and addresses agents may dial the agent
		// listener by; empty means agentSANs' defaults.
		SANs []string `koanf:"sans"`
	} `koanf:"agent"`
	// PeerListen is the Raft peer listener (HOST:PORT, mutual TLS under
	// the cluster CA); empty keeps the single-node unix socket.
	PeerListen string `koanf:"peer_listen"`
	// Advertise is the peer HOST:PORT other replicas dial, when it is not
	// PeerListen's (a listener on 0.0.0.0).
	Advertise string `koanf:"advertise"`
	// Join is an existing replica's agent listener (https URL), used on
	// first boot only, with JoinToken (otxr_…@FP).
	Join      string `koanf:"join"`
	JoinToken string `koanf:"join_token"`
	Etcd      struct {
		Name      string `koanf:"name"`
		PeerURL   string `koanf:"peer_url"`
		ClientURL string `koanf:"client_url"`
		MaxTxnOps uint   `koanf:"max_txn_ops"`
		// QuotaBytes is the backend size at which etcd raises its space
		// alarm and writes answer 507 storage_full.
		QuotaBytes int64 `koanf:"quota_bytes"`
		// AutoCompactionMode (periodic|revision) and AutoCompactionRetention
		// (a duration, or a number of revisions) bound the history kept.
		AutoCompactionMode      string `koanf:"auto_compaction_mode"`
		AutoCompactionRetention string `koanf:"auto_compaction_retention"`
		// SpaceCheckInterval is how often the storage loop checks the
		// space alarm and fragmentation.
		SpaceCheckInterval time.Duration `koanf:"space_check_interval"`
		// DefragMinFreeBytes is the least reclaimable space worth a
		// defragmentation.
		DefragMinFreeBytes int64 `koanf:"defrag_min_free_bytes"`
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
	// Loops: the replica owning the cluster-wide periodic loops holds an
	// etcd lease of OwnerTTL; when it dies another takes over within it.
	Loops struct {
		OwnerTTL time.Duration `koanf:"owner_ttl"`
	} `koanf:"loops"`
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
	// Auth holds the limits on unauthenticated clients (per TCP peer
	// address; forwarding headers are never trusted) and the refresh grace.
	Auth struct {
		LoginPerSource     int           `koanf:"login_per_source"`
		LoginPerAccount    int           `koanf:"login_per_account"`
		AnonymousPerMinute int           `koanf:"anonymous_per_minute"`
		RefreshGrace       time.Duration `koanf:"refresh_grace"`
	} `koanf:"auth"`
	Heartbeat struct {
		// Interval is what agents are told to heartbeat at; a node is
		// unreachable after three missed intervals.
		Interval time.Duration `koanf:"interval"`
	} `koanf:"heartbeat"`
	Nodes struct {
		// GoneAfter moves an unreachable node to gone that long after its
		// last heartbeat.
		GoneAfter time.Duration `koanf:"gone_after"`
	} `koanf:"nodes"`
	// Placement holds the overcommit ratios (cpu_overcommit, memory_overcommit,
	// disk_overcommit).
	Placement placement.Config `koanf:"placement"`
	HTTP      struct {
		MaxBodyBytes int64 `koanf:"max_body_bytes"`
		Metrics      bool  `koanf:"metrics"`
		// MetricsPublic serves /metrics without authentication (for scrapers).
		MetricsPublic bool `koanf:"metrics_public"`
		// ConsoleOrigins are browser origins (scheme://host[:port]) besides
		// the API's own that may open console WebSockets.
		ConsoleOrigins []string `koanf:"console_origins"`
	} `koanf:"http"`
	// Watch bounds the GET /v1/watch streams this replica serves
	// (docs/watch.md, "Limits"): MaxClients streams in all and PerUser per
	// user (429 watch_capacity_reached and too_many_watches over them),
	// Buffer events a stream may fall behind before it is sent resync,
	// Bookmark between two bookmarks, AuthCheck between two checks of a
	// stream's token.
	Watch struct {
		MaxClients int           `koanf:"max_clients"`
		PerUser    int           `koanf:"per_user"`
		Buffer     int           `koanf:"buffer"`
		Bookmark   time.Duration `koanf:"bookmark"`
		AuthCheck  time.Duration `koanf:"auth_check"`
	} `koanf:"watch"`
	Log struct {
		Level  string `koanf:"level"`
		Format string `koanf:"format"`
	} `koanf:"log"`
}

func defaultConfig() apiConfig {
	var c apiConfig
	c.DataDir = "/var/lib/otherix"
	// Loopback by default; binding wider is an explicit choice.
	c.Listen = "127.0.0.1:7080"
	c.TLS.Enabled = true
	c.AgentListen = "127.0.0.1:7443"
	c.Etcd.MaxTxnOps = 128
	c.Etcd.QuotaBytes = etcd.DefaultQuotaBytes
	c.Etcd.AutoCompactionMode = etcd.DefaultAutoCompactionMode
	c.Etcd.AutoCompactionRetention = etcd.DefaultAutoCompactionRetention
	c.Etcd.SpaceCheckInterval = time.Minute
	c.Etcd.DefragMinFreeBytes = maintenance.DefaultStoragePolicy().MinFreeBytes
	c.Jobs.Dispatch = true
	c.Jobs.ClaimTTL = 10 * time.Second
	c.Jobs.Attempts = 5
	c.Jobs.BackoffBase = 2 * time.Second
	c.Jobs.BackoffMax = time.Minute
	c.Tasks.Retention = 7 * 24 * time.Hour
	c.Loops.OwnerTTL = election.DefaultTTL
	c.Backup.Interval = time.Hour
	c.Backup.Keep = 24
	c.Admin.Email = "admin@localhost"
	c.Audit.Retention = 30 * 24 * time.Hour
	c.Auth.LoginPerSource = 10
	c.Auth.LoginPerAccount = 5
	c.Auth.AnonymousPerMinute = 240
	c.Auth.RefreshGrace = 30 * time.Second
	c.Heartbeat.Interval = 30 * time.Second
	c.Nodes.GoneAfter = 10 * time.Minute
	c.Placement = placement.DefaultConfig()
	c.HTTP.MaxBodyBytes = 1 << 20
	c.HTTP.Metrics = true
	c.HTTP.MetricsPublic = true
	c.Watch.MaxClients = server.DefaultWatchMaxClients
	c.Watch.PerUser = server.DefaultWatchPerUser
	c.Watch.Buffer = watch.DefaultBuffer
	c.Watch.Bookmark = watch.DefaultBookmark
	c.Watch.AuthCheck = server.DefaultWatchAuthCheck
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
		FlagKeys: map[string]string{"data-dir": "data_dir", "listen": "listen", "agent-listen": "agent_listen",
			"peer-listen": "peer_listen", "advertise": "advertise", "join": "join", "join-token": "join_token", "name": "etcd.name"},
	})
	if err != nil {
		return cfg, err
	}
	if cfg.DataDir == "" {
		return cfg, fmt.Errorf("data_dir must be set")
	}
	if cfg.Listen == "" {
		return cfg, fmt.Errorf("listen must be set")
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return cfg, fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	if cfg.TLS.Enabled && len(cfg.TLS.SANs) == 0 {
		cfg.TLS.SANs = defaultRESTSANs(cfg.Listen)
	}
	if cfg.TLS.Enabled {
		cfg.TLS.SANs = withAdvertisedSAN(cfg.TLS.SANs, cfg.Listen)
	}
	if cfg.AgentListen == "" {
		return cfg, fmt.Errorf("agent_listen must be set")
	}
	if _, _, err := net.SplitHostPort(cfg.AgentListen); err != nil {
		return cfg, fmt.Errorf("agent_listen %q: %w", cfg.AgentListen, err)
	}
	if len(cfg.Agent.SANs) == 0 {
		cfg.Agent.SANs = defaultAgentSANs(cfg.AgentListen)
	}
	cfg.Agent.SANs = withAdvertisedSAN(cfg.Agent.SANs, cfg.AgentListen)
	if cfg.Heartbeat.Interval < time.Second {
		return cfg, fmt.Errorf("heartbeat.interval %s: must be at least 1s", cfg.Heartbeat.Interval)
	}
	if cfg.Nodes.GoneAfter <= 3*cfg.Heartbeat.Interval {
		return cfg, fmt.Errorf("nodes.gone_after %s: must be longer than three heartbeat intervals (%s)",
			cfg.Nodes.GoneAfter, 3*cfg.Heartbeat.Interval)
	}
	if cfg.Placement.CPUOvercommit <= 0 || cfg.Placement.MemoryOvercommit <= 0 || cfg.Placement.DiskOvercommit <= 0 {
		return cfg, fmt.Errorf("placement.cpu_overcommit %g, placement.memory_overcommit %g, placement.disk_overcommit %g: must be positive",
			cfg.Placement.CPUOvercommit, cfg.Placement.MemoryOvercommit, cfg.Placement.DiskOvercommit)
	}
	if err := etcd.CheckSpace(cfg.Etcd.QuotaBytes, cfg.Etcd.AutoCompactionMode, cfg.Etcd.AutoCompactionRetention); err != nil {
		return cfg, err
	}
	if cfg.Etcd.SpaceCheckInterval < time.Second {
		return cfg, fmt.Errorf("etcd.space_check_interval %s: must be at least 1s", cfg.Etcd.SpaceCheckInterval)
	}
	if cfg.Loops.OwnerTTL < 2*time.Second {
		return cfg, fmt.Errorf("loops.owner_ttl %s: must be at least 2s", cfg.Loops.OwnerTTL)
	}
	if err := checkWatch(cfg); err != nil {
		return cfg, err
	}
	if cfg.Etcd.DefragMinFreeBytes <= 0 {
		return cfg, fmt.Errorf("etcd.defrag_min_free_bytes %d: must be positive", cfg.Etcd.DefragMinFreeBytes)
	}
	if err := checkReplicaSettings(&cfg); err != nil {
		return cfg, err
	}
	if cfg.Backup.Dir == "" {
		cfg.Backup.Dir = filepath.Join(cfg.DataDir, "backups")
	}
	// Absolute at the edge: the member, the PKI and the backup loop keep
	// these paths, and a relative one would follow the working directory.
	for _, d := range []struct {
		key string
		dir *string
	}{{"data_dir", &cfg.DataDir}, {"backup.dir", &cfg.Backup.Dir}} {
		abs, err := filepath.Abs(*d.dir)
		if err != nil {
			return cfg, fmt.Errorf("%s %q: %w", d.key, *d.dir, err)
		}
		*d.dir = abs
	}
	return cfg, nil
}

// defaultAgentSANs are the names agents may reach the agent listener by when
// agent.sans is not set: the host name, localhost, 127.0.0.1, and the
// listen host when it is a specific IP address.
func defaultAgentSANs(agentListen string) []string {
	var sans []string
	add := func(s string) {
		if s != "" && !slices.Contains(sans, s) {
			sans = append(sans, s)
		}
	}
	if h, err := os.Hostname(); err == nil && validDNSName(strings.ToLower(h)) {
		add(strings.ToLower(h))
	}
	add("localhost")
	add("127.0.0.1")
	if host, _, err := net.SplitHostPort(agentListen); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() && ip.Zone() == "" {
			add(ip.String())
		}
	}
	return sans
}

// defaultRESTSANs are the names clients may reach the REST listener by when
// tls.sans is not set: the agent listener's defaults plus ::1.
func defaultRESTSANs(listen string) []string {
	sans := defaultAgentSANs(listen)
	if !slices.Contains(sans, "::1") {
		sans = append(sans, "::1")
	}
	return sans
}

// validDNSName reports whether s can be a certificate's DNS SAN; a host name
// that cannot (an odd container name) is left out rather than fail startup.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// checkReplicaSettings checks the peer listener and join settings and
// fills the replica name a joiner defaults to.
func checkReplicaSettings(cfg *apiConfig) error {
	if cfg.PeerListen == "" {
		switch {
		case cfg.Advertise != "":
			return fmt.Errorf("advertise %q: needs peer_listen", cfg.Advertise)
		case cfg.Join != "" || cfg.JoinToken != "":
			return fmt.Errorf("join: needs peer_listen (the address the other replicas reach this one at)")
		}
		return nil
	}
	if cfg.Etcd.PeerURL != "" {
		return fmt.Errorf("peer_listen and etcd.peer_url are both set: use peer_listen")
	}
	for key, hp := range map[string]string{"peer_listen": cfg.PeerListen, "advertise": cfg.Advertise} {
		if hp == "" {
			continue
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil || port == "" || host == "" {
			return fmt.Errorf("%s %q: want HOST:PORT", key, hp)
		}
	}
	if cfg.Join != "" {
		if cfg.JoinToken == "" {
			return fmt.Errorf("join: needs join_token (otherix cluster join-token create --replica)")
		}
		if !strings.HasPrefix(cfg.Join, "https://") {
			return fmt.Errorf("join %q: want the https URL of an existing replica's agent listener", cfg.Join)
		}
	}
	if cfg.Etcd.Name == "" && cfg.Join != "" {
		cfg.Etcd.Name = defaultReplicaName(cfg.PeerListen)
	}
	return nil
}

// defaultReplicaName is <first label of the host name>-<peer port>, unique
// among replicas of one host; "replica-<port>" when the host name is not
// a usable label.
func defaultReplicaName(peerListen string) string {
	_, port, _ := net.SplitHostPort(peerListen)
	h, _ := os.Hostname()
	label, _, _ := strings.Cut(strings.ToLower(h), ".")
	if !validDNSName(label) || len(label) > 40 {
		label = "replica"
	}
	return label + "-" + port
}

// checkWatch refuses watch limits that could not serve: a stream limit
// below one, a per-user limit above the replica's (it would never apply),
// a buffer too small to hold one transaction's events, or intervals so
// short that bookmarks and token checks would be the load.
func checkWatch(cfg apiConfig) error {
	w := cfg.Watch
	switch {
	case w.MaxClients < 1:
		return fmt.Errorf("watch.max_clients %d: must be at least 1", w.MaxClients)
	case w.PerUser < 1 || w.PerUser > w.MaxClients:
		return fmt.Errorf("watch.per_user %d: must be between 1 and watch.max_clients (%d)", w.PerUser, w.MaxClients)
	case w.Buffer < watch.MinBuffer:
		return fmt.Errorf("watch.buffer %d: must be at least %d", w.Buffer, watch.MinBuffer)
	case w.Bookmark < time.Second:
		return fmt.Errorf("watch.bookmark %s: must be at least 1s", w.Bookmark)
	case w.AuthCheck < time.Second:
		return fmt.Errorf("watch.auth_check %s: must be at least 1s", w.AuthCheck)
	}
	return nil
}
