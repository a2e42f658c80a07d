// Command otherix-agent is the per-node daemon: it owns the node's QEMU
// processes, image cache and network data plane. bootstrap enrolls the node
// (issue #4); serve reports the node to its control plane with heartbeats.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/otherix/otherix/internal/buildinfo"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/nodeagent/enroll"
	"github.com/otherix/otherix/security"
)

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
				buildinfo.Version(), runtime.GOOS, runtime.GOARCH, runtime.Version())
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
			dir, err := absDir("--state-dir", stateDir)
			if err != nil {
				return fmt.Errorf("otherix-agent: bootstrap: %w", err)
			}
			if err := refuseNewerState(dir); err != nil {
				return fmt.Errorf("otherix-agent: bootstrap: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := enroll.Bootstrap(ctx, enroll.Options{
				Server:       server,
				Token:        token,
				Name:         name,
				StateDir:     dir,
				AgentVersion: buildinfo.Version(),
				Force:        force,
			})
			if err != nil {
				return fmt.Errorf("otherix-agent: bootstrap: %w", err)
			}
			if err := ensureStateFormat(res.StateDir); err != nil {
				return fmt.Errorf("otherix-agent: bootstrap: %w", err)
			}
			verb := "enrolled"
			if res.AlreadyEnrolled {
				verb = "already enrolled"
			}
			// The node as the user named it; the certificate CN is a detail.
			fmt.Fprintf(cmd.OutOrStdout(), "%s node %s (id %s, certificate %s); CA fingerprint %s; state in %s\n",
				verb, res.NodeName, res.NodeID, security.NodeCN(res.NodeName), res.CAFingerprint, res.StateDir)
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

// absDir makes a directory flag absolute at the edge: the agent keeps these
// paths in VM records and hands them to QEMU, which must not depend on the
// directory the agent happened to be started from.
func absDir(flag, dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", flag, dir, err)
	}
	return abs, nil
}
