package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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
			if done, err := a.emitCreatedToken(created); done {
				return err
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
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the control plane's replicas (etcd members)",
		Long: `List the otherix-api replicas: name, role (voter or learner), whether it
leads Raft and answers on its peer port, and its API, agent and peer URLs.
-o wide adds the member id, the agent URL, the Raft index lag behind the
leader (known for every member when the answering replica leads, else only
for itself: "-" when unknown), the otherix and etcd versions and a note.
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
	cmd.AddCommand(a.clusterMembersRemoveCommand())
	return cmd
}

func (a *app) clusterMembersRemoveCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "remove NAME|ID|PEER",
		Aliases: []string{"rm"},
		Short:   "Remove a replica from the cluster (admin)",
		Long: `Remove an otherix-api replica from the etcd membership and forget its
URLs. Name it by its name, or by its member id or peer address (HOST:PORT or
https://HOST:PORT) for a member added by a join that never started.

A voter is removed only if the voters left keep a quorum of healthy members
(quorum_at_risk otherwise); --force skips that check, never the refusal to
remove the only voter. A learner is always removed. A removed replica that is
still running stops serving and exits, naming why; to bring it back, empty
its data dir and join it again with a new replica join token.`,
		Example: `  otherix cluster members remove r3
  otherix cluster members remove 127.0.0.1:2391    # a join that never started`,
		Args: exactArgs(1, "a member name, id or peer address"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := strings.TrimSuffix(strings.TrimPrefix(args[0], "https://"), "/")
			var m *messages.ClusterMember
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				m, err = c.RemoveClusterMember(ctx, ref, force)
				return err
			}); err != nil {
				return err
			}
			if a.output == outputJSON || a.output == outputYAML {
				return a.emit(m, nil)
			}
			name := m.Name
			if name == "" {
				name = m.ID
			}
			fmt.Fprintf(a.stdout, "member/%s removed\n", name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove a voter even if the healthy voters left would be below quorum")
	return cmd
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
		head = append(head, "ID", "AGENT", "LAG", "VERSION", "ETCD", "NOTE")
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
			lag := "-"
			if m.RaftIndexLag != nil {
				lag = strconv.FormatUint(*m.RaftIndexLag, 10)
			}
			r = append(r, m.ID, orNone(m.AgentURL), lag, orNone(m.Version), orNone(m.EtcdVersion), orNone(m.Note))
		}
		rows = append(rows, r)
	}
	return rows
}
