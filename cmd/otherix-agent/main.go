// Command otherix-agent is the per-node daemon: it owns the node's QEMU
// processes, image cache and network data plane. This build carries only
// the command surface; enrollment and serving land with issue #4.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

// defaultStateDir is where the agent keeps its enrollment and VM state.
const defaultStateDir = "/var/lib/otherix-agent"

// errNotImplemented is the honest answer of commands whose behaviour has
// not been built yet, so scripts fail loudly instead of believing a node
// was enrolled or is serving.
var errNotImplemented = errors.New("is not implemented yet in this build (node enrollment lands with issue #4)")

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
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Enroll this node with a control plane (one-shot) and write the state dir",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return notImplemented("bootstrap")
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "control-plane URL, e.g. https://api.example.com:7443")
	f.StringVar(&token, "token", "", "one-time join token (from: otherix node join-token create)")
	f.StringVar(&name, "name", "", "node name (default: the host name)")
	f.StringVar(&stateDir, "state-dir", defaultStateDir, "directory for the node's identity and state")
	_ = cmd.MarkFlagRequired("server")
	_ = cmd.MarkFlagRequired("token")
	return cmd
}

func newServeCmd() *cobra.Command {
	var stateDir, accel string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the agent: serve the mTLS API and run VMs",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			switch accel {
			case "auto", "kvm", "tcg":
			default:
				return fmt.Errorf("otherix-agent: serve: --accel must be auto, kvm or tcg, got %q", accel)
			}
			return notImplemented("serve")
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", defaultStateDir, "state directory written by otherix-agent bootstrap")
	f.StringVar(&accel, "accel", "auto", "accelerator: auto (probe that KVM really boots guests), kvm or tcg")
	return cmd
}

func notImplemented(cmd string) error {
	return fmt.Errorf("otherix-agent: %s %w", cmd, errNotImplemented)
}
