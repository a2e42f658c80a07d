// Command otherix-agent is the per-node daemon: it owns the node's QEMU
// processes, image cache and network data plane. bootstrap enrolls the node
// (issue #4); serve reports the node to its control plane with heartbeats.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/capacity"
	"github.com/otherix/otherix/nodeagent/enroll"
	"github.com/otherix/otherix/nodeagent/heartbeat"
	"github.com/otherix/otherix/security"
)

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

// defaultStateDir is where the agent keeps its enrollment and VM state.
const defaultStateDir = "/var/lib/otherix-agent"

func main() {
	if err := newRootCmd(os.Stdout).Execute(); err != nil {
		msg := err.Error()
		// Cobra's own errors (unknown flag, missing required flag) carry no
		// prefix; ours do. Say once which program is complaining.
		if !strings.HasPrefix(msg, "otherix-agent: ") {
			msg = "otherix-agent: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

func newRootCmd(out io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "otherix-agent",
		Short: "Otherix hypervisor node agent",
		// Errors are printed once by main; cobra's own "Error:" line and
		// usage dump would repeat them.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(out)
	root.AddCommand(newVersionCmd(), newBootstrapCmd(), newServeCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and platform",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "otherix-agent %s %s/%s (%s)\n",
				version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		},
	}
}

func newBootstrapCmd() *cobra.Command {
	var server, token, name, stateDir string
	var force bool
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Enroll this node with a control plane (one-shot) and write the state dir",
		Long: `Enroll this node with a control plane and write its identity into the state dir.

The control plane's CA is trusted only if its SHA-256 matches the fingerprint
the join token carries; the node key is generated here and never sent.
Re-running with the same server and name is a no-op while the certificate is
valid for more than a day.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := enroll.Bootstrap(ctx, enroll.Options{
				Server:       server,
				Token:        token,
				Name:         name,
				StateDir:     stateDir,
				AgentVersion: version,
				Force:        force,
			})
			if err != nil {
				return fmt.Errorf("otherix-agent: bootstrap: %w", err)
			}
			verb := "enrolled"
			if res.AlreadyEnrolled {
				verb = "already enrolled"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s as %s (id %s); CA fingerprint %s; state in %s\n",
				verb, security.NodeCN(res.NodeName), res.NodeID, res.CAFingerprint, res.StateDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "control-plane URL, e.g. https://api.example.com:7443")
	f.StringVar(&token, "token", "", "one-time join token (from: otherix node join-token create)")
	f.StringVar(&name, "name", "", "node name (default: the host name)")
	f.StringVar(&stateDir, "state-dir", defaultStateDir, "directory for the node's identity and state")
	f.BoolVar(&force, "force", false, "replace an identity for another server or node name already in the state dir")
	_ = cmd.MarkFlagRequired("server")
	_ = cmd.MarkFlagRequired("token")
	return cmd
}

// envAccel names the environment variable that sets serve's default
// accelerator (a --accel flag still wins).
const envAccel = "OTHERIX_ACCEL"

func newServeCmd() *cobra.Command {
	var stateDir, accel string
	defAccel := capacity.AccelAuto
	if v := os.Getenv(envAccel); v != "" {
		defAccel = v
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the agent: report this node to its control plane",
		Long: `Run the agent: load the identity written by bootstrap and heartbeat the
node's observed state to the control plane over mutual TLS until SIGINT or
SIGTERM.

--accel auto does not trust /dev/kvm on its own (a nested host may have one
that cannot boot guests): it reports KVM as unverified and uses tcg. Use
--accel kvm to force KVM, or set ` + envAccel + ` to change the default.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !capacity.ValidAccel(accel) {
				src := "--accel"
				if !cmd.Flags().Changed("accel") {
					src = envAccel
				}
				return fmt.Errorf("otherix-agent: serve: %s must be auto, kvm or tcg, got %q", src, accel)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return serve(ctx, log, stateDir, accel)
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir, "state directory written by otherix-agent bootstrap")
	f.StringVar(&accel, "accel", defAccel, "accelerator: auto (use KVM only once verified; today: tcg), kvm or tcg (default from $"+envAccel+")")
	return cmd
}

// serve runs the heartbeat loop until ctx ends.
func serve(ctx context.Context, log *slog.Logger, stateDir, accel string) error {
	st, err := enroll.LoadState(stateDir)
	if errors.Is(err, enroll.ErrNotEnrolled) {
		return fmt.Errorf("otherix-agent: serve: not enrolled: run otherix-agent bootstrap (%w)", err)
	}
	if err != nil {
		return fmt.Errorf("otherix-agent: serve: %w", err)
	}
	if time.Now().After(st.Cert.NotAfter) {
		return fmt.Errorf("otherix-agent: serve: node certificate expired at %s: run otherix-agent bootstrap --force with a new join token",
			st.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	capa, err := capacity.Probe(accel)
	if err != nil {
		return fmt.Errorf("otherix-agent: serve: %w", err)
	}
	qemu := capacity.QEMUVersions(ctx)
	client, err := heartbeat.ClientFromState(st)
	if err != nil {
		return fmt.Errorf("otherix-agent: serve: %w", err)
	}
	log.Info("agent starting", "version", version, "node", st.Config.NodeName, "server", st.Config.Server,
		"accelerator", capa.Accelerator, "kvm", capa.KVM, "kvm_reason", capa.KVMReason,
		"cpus", capa.CPUs, "memory_mib", capa.MemoryMiB, "qemu", strings.Join(qemu, "; "))
	if len(qemu) == 0 {
		log.Warn("no qemu-system-x86_64 or qemu-system-aarch64 on PATH: this node cannot run VMs")
	}
	loop := &heartbeat.Loop{
		Client: client,
		URL:    heartbeat.URL(st.Config.Server),
		Observe: func(context.Context) messages.Heartbeat {
			// VMs, pools and images arrive with the VM lifecycle issue;
			// until then they are empty (and encode as []).
			return messages.Heartbeat{
				AgentVersion: version,
				Arch:         runtime.GOARCH,
				Capacity:     capa,
				QEMUVersions: qemu,
				Pools:        []messages.PoolStatus{},
				VMs:          []messages.VMObserved{},
				Images:       []messages.CachedImage{},
			}
		},
		Log: log,
	}
	_ = loop.Run(ctx)
	s := loop.Status()
	log.Info("agent stopping", "heartbeats_ok", s.Successes, "heartbeats_failed", s.Failures, "last_ok", s.OK)
	return nil
}
