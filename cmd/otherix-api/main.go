// Command otherix-api is the Otherix control plane: the REST API, the embedded
// etcd member that holds all state, the actor system and the job dispatcher.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/internal/buildinfo"
)

func main() {
	if err := rootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "otherix-api:", err)
		os.Exit(1)
	}
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "otherix-api",
		Short:         "Otherix control plane: REST API, embedded etcd, actors and job dispatcher",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version(),
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd)
		},
	}
	f := root.Flags()
	f.String("config", "", "YAML configuration file")
	f.String("data-dir", "", "data directory for etcd and snapshots (env OTHERIX_DATA_DIR)")
	f.String("listen", "", "REST listener address (env OTHERIX_LISTEN)")
	f.String("agent-listen", "", "agent-facing HTTPS listener address (env OTHERIX_AGENT_LISTEN; default 127.0.0.1:7443)")
	f.String("peer-listen", "", "Raft peer listener HOST:PORT, mutual TLS under the cluster CA (env OTHERIX_PEER_LISTEN; default: none, a unix socket)")
	f.String("advertise", "", "peer HOST:PORT the other replicas dial, when not --peer-listen's (env OTHERIX_ADVERTISE)")
	f.String("join", "", "on first boot, join the cluster of the replica whose agent listener is this https URL (env OTHERIX_JOIN)")
	f.String("join-token", "", "replica join token otxr_…@FP for --join (env OTHERIX_JOIN_TOKEN)")
	f.String("name", "", "this replica's name, its etcd member name (env OTHERIX_ETCD__NAME; default otherix, or <host>-<peer port> when joining)")
	root.AddCommand(restoreCommand())
	return root
}
