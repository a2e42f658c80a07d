package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

func newLogger(cfg apiConfig) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.Log.Format, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(cmd *cobra.Command) error {
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	member, err := etcd.Start(ctx, etcd.Config{DataDir: cfg.DataDir, Name: cfg.Etcd.Name, PeerURL: cfg.Etcd.PeerURL,
		ClientURL: cfg.Etcd.ClientURL, MaxTxnOps: cfg.Etcd.MaxTxnOps})
	if err != nil {
		return err
	}
	defer member.Close()
	st := store.New(member.Client(), store.WithMaxTxnOps(member.MaxTxnOps()))
	seeded, err := st.SeedSettings(ctx, messages.DefaultSettings())
	if err != nil {
		return fmt.Errorf("seed settings: %w", err)
	}
	if seeded {
		log.Info("new cluster: settings document seeded")
	}

	gw, err := gateway.Start(ctx, st, gateway.Config{
		NoDispatch: !cfg.Jobs.Dispatch, ClaimTTL: cfg.Jobs.ClaimTTL, JobAttempts: cfg.Jobs.Attempts,
		JobBackoffBase: cfg.Jobs.BackoffBase, JobBackoffMax: cfg.Jobs.BackoffMax,
		TaskRetention: cfg.Tasks.Retention,
		BackupDir:     cfg.Backup.Dir, BackupInterval: cfg.Backup.Interval, BackupKeep: cfg.Backup.Keep,
		Snapshot: member.Snapshot, Prune: etcd.PruneSnapshots,
		Identity: gateway.IdentityConfig{AuditRetention: cfg.Audit.Retention},
	}, log)
	if err != nil {
		return err
	}
	defer gw.Close()
	if err := bootstrapAdmin(ctx, gw, cfg, log); err != nil {
		return err
	}

	scfg := server.DefaultConfig()
	scfg.MaxBodyBytes, scfg.MetricsEnabled, scfg.MetricsPublic = cfg.HTTP.MaxBodyBytes, cfg.HTTP.Metrics, cfg.HTTP.MetricsPublic
	srv := server.New(scfg, gw, log)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	// Requests share a base context that shutdown cancels, so long polls
	// (?wait= up to 60s) end at once instead of holding shutdown up.
	baseCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	abs, _ := filepath.Abs(cfg.DataDir)
	log.Info("otherix-api ready", "listen", "http://"+ln.Addr().String(), "data_dir", abs, "version", version)
	fmt.Fprintf(os.Stdout, "otherix-api %s listening on http://%s (data dir %s)\n", version, ln.Addr(), abs)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	case err := <-member.Err():
		return fmt.Errorf("etcd member stopped: %w", err)
	}
	cancelRequests()
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return httpSrv.Shutdown(shutdown)
}

// bootstrapAdmin creates the first admin when the cluster has none. A
// generated password is printed once to stdout (and flagged in the log
// without the password); when the admin exists already nothing is said about
// passwords.
func bootstrapAdmin(ctx context.Context, gw *gateway.Gateway, cfg apiConfig, log *slog.Logger) error {
	email := cfg.Admin.Email
	if email == "" {
		email = "admin@localhost"
	}
	created, generated, err := gw.BootstrapAdmin(ctx, email, cfg.Admin.Password)
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	if !created {
		return nil
	}
	if generated == "" {
		log.Info("bootstrap admin created", "email", email)
		return nil
	}
	log.Warn("bootstrap admin created with a generated password, printed once on stdout; change it", "email", email)
	fmt.Fprintf(os.Stdout, "bootstrap admin: %s / %s (change it with otherix user passwd)\n", email, generated)
	return nil
}

var _ server.ControlPlane = (*gateway.Gateway)(nil)
