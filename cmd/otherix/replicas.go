package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

func (a *app) clusterJoinTokenCommand() *cobra.Command {
	cmd := groupCommand("join-token", "Manage one-time replica join tokens (admin)", "join-tokens")
	cmd.AddCommand(a.clusterJoinTokenCreateCommand())
	return cmd
}

func (a *app) clusterJoinTokenCreateCommand() *cobra.Command {
	var ttl time.Duration
	var replica bool
	cmd := &cobra.Command{
		Use:   "create --replica",
		Short: "Create a one-time replica join token (shown once)",
		Long: `Create a one-time, expiring token that adds one otherix-api replica to
the cluster. The token (otxr_<id>.<secret>@<CA fingerprint>) is printed alone
on stdout, once and never again; pass it to the new replica:

  otherix-api --peer-listen HOST:PORT --join https://<agent-listen> --join-token TOKEN

Node join tokens are created with "otherix node join-token create".`,
		Example: `  TOKEN=$(otherix cluster join-token create --replica --ttl 30m)`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !replica {
				return usageError(fmt.Errorf("--replica is required (node join tokens: otherix node join-token create)"))
			}
			if ttl <= 0 {
				return usageError(fmt.Errorf("--ttl must be positive, got %s", ttl))
			}
			req := messages.CreateClusterJoinTokenRequest{Kind: messages.JoinTokenKindReplica, TTL: ttl.String()}
			var created *messages.CreatedJoinToken
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				created, err = c.CreateClusterJoinToken(ctx, req)
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintln(a.stderr, "warning: this is the only time the token is shown; use it or store it now")
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, created)
			case outputYAML:
				return writeYAML(a.stdout, created)
			}
			_, err := fmt.Fprintln(a.stdout, created.Token)
			return err
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token, at most 24h")
	cmd.Flags().BoolVar(&replica, "replica", false, "a token for a new otherix-api replica")
	return cmd
}

func (a *app) clusterMembersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the control plane's replicas (etcd members)",
		Long: `List the otherix-api replicas: name, role (voter or learner), whether it
leads Raft and answers on its peer port, and its API, agent and peer URLs.
-o json prints the items exactly as GET /v1/cluster/members answers them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ms []messages.ClusterMember
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				ms, err = c.ClusterMembers(ctx)
				return err
			}); err != nil {
				return err
			}
			return a.emit(newItemList(ms), func(wide bool) [][]string { return memberRows(ms, wide) })
		},
	}
}

// loopsCell says which replica runs the cluster-wide periodic loops.
func loopsCell(owner bool) string {
	if owner {
		return "owner"
	}
	return "-"
}

// memberRows is the member table; wide adds the id, the agent URL and the note.
func memberRows(ms []messages.ClusterMember, wide bool) [][]string {
	head := []string{"NAME", "ROLE", "LEADER", "HEALTHY", "API", "PEER"}
	head = append(head, "LOOPS")
	if wide {
		head = append(head, "ID", "AGENT", "NOTE")
	}
	rows := [][]string{head}
	for _, m := range ms {
		name := m.Name
		if name == "" {
			name = "(not started)"
		}
		r := []string{name, m.Role, strconv.FormatBool(m.IsLeader), strconv.FormatBool(m.Healthy), orNone(m.APIURL), m.PeerURL}
		r = append(r, loopsCell(m.LoopOwner))
		if wide {
			r = append(r, m.ID, orNone(m.AgentURL), orNone(m.Note))
		}
		rows = append(rows, r)
	}
	return rows
}
