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

func (a *app) nodeCommand() *cobra.Command {
	cmd := groupCommand("node", "Inspect enrolled nodes and manage join tokens", "nodes")
	cmd.AddCommand(a.nodeListCommand(), a.nodeGetCommand(), a.joinTokenCommand())
	return cmd
}

// nodeRows is the table of nodes; wide adds ID, CERT EXPIRES and FINGERPRINT.
func nodeRows(nodes []*messages.Node, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "PHASE", "CORDONED", "ARCH", "AGENT", "ENROLLED"}
	if wide {
		head = append(head, "ID", "CERT EXPIRES", "CERT FINGERPRINT")
	}
	rows := [][]string{head}
	for _, n := range nodes {
		r := []string{n.Name, n.Phase, strconv.FormatBool(n.Cordoned), orNone(n.Arch), orNone(n.AgentVersion), age(n.EnrolledAt, now)}
		if wide {
			exp := none
			if !n.CertNotAfter.IsZero() {
				exp = n.CertNotAfter.UTC().Format(time.RFC3339)
			}
			r = append(r, n.ID, exp, orNone(n.CertFingerprint))
		}
		rows = append(rows, r)
	}
	return rows
}

func (a *app) nodeListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List enrolled nodes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodes, err := listAll(cmd.Context(), a, limit, func(c *client.Client, ctx context.Context, o client.ListOptions, opts ...client.CallOption) ([]*messages.Node, string, error) {
				return c.ListNodes(ctx, o, opts...)
			})
			if err != nil {
				return err
			}
			return a.emit(newItemList(nodes), func(wide bool) [][]string { return nodeRows(nodes, wide, a.now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

func (a *app) nodeGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one node",
		Args:  exactArgs(1, "a node name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n *messages.Node
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				n, err = c.GetNode(ctx, args[0])
				return err
			}); err != nil {
				return err
			}
			return a.emit(n, func(wide bool) [][]string { return nodeRows([]*messages.Node{n}, wide, a.now()) })
		},
	}
}

func (a *app) joinTokenCommand() *cobra.Command {
	cmd := groupCommand("join-token", "Manage one-time node join tokens (admin)", "join-tokens")
	cmd.AddCommand(a.joinTokenCreateCommand(), a.joinTokenListCommand(), a.joinTokenRevokeCommand())
	return cmd
}

// joinTokenRows is the table of join tokens; wide adds CREATED BY.
func joinTokenRows(tokens []messages.JoinTokenView, wide bool, now time.Time) [][]string {
	head := []string{"ID", "NODE", "AGE", "EXPIRES"}
	if wide {
		head = append(head, "CREATED BY")
	}
	rows := [][]string{head}
	for _, k := range tokens {
		node := k.NodeName
		if node == "" {
			node = "<any>"
		}
		r := []string{k.ID, node, age(k.CreatedAt, now), k.ExpiresAt.UTC().Format(time.RFC3339)}
		if wide {
			r = append(r, k.CreatedBy)
		}
		rows = append(rows, r)
	}
	return rows
}

// joinTokenUsage tells the admin what to do with a fresh token.
func joinTokenUsage(token, name string) string {
	nameArg := " --name NODE"
	if name != "" {
		nameArg = " --name " + name
	}
	return fmt.Sprintf(`
Token: %s

It enrolls one node, once, before it expires. On the node, run:

  otherix-agent bootstrap --server https://<agent-listen> --token %s%s

where <agent-listen> is the agent listener otherix-api printed at start
(agent_listen, port 7443 by default). The token pins the cluster CA, so the
agent refuses a server presenting any other.
`, token, token, nameArg)
}

func (a *app) joinTokenCreateCommand() *cobra.Command {
	var ttl time.Duration
	var name string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time join token (shown once)",
		Long: `Create a one-time, expiring join token that enrolls one node with
"otherix-agent bootstrap". The token (otxj_<id>.<secret>@<CA fingerprint>) is
printed once and never again. --name binds it to one node name.`,
		Example: `  otherix node join-token create --ttl 30m --name hv1
  otherix node join-token create -o json | jq -r .token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 {
				return usageError(fmt.Errorf("--ttl must be positive, got %s", ttl))
			}
			req := messages.CreateJoinTokenRequest{TTL: ttl.String(), NodeName: name}
			var created *messages.CreatedJoinToken
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				created, err = c.CreateJoinToken(ctx, req)
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
			if err := writeTable(a.stdout, joinTokenRows([]messages.JoinTokenView{created.JoinToken}, a.output == outputWide, a.now())); err != nil {
				return err
			}
			_, err := fmt.Fprint(a.stdout, joinTokenUsage(created.Token, created.JoinToken.NodeName))
			return err
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token, at most 24h")
	cmd.Flags().StringVar(&name, "name", "", "the only node name the token may enroll")
	return cmd
}

func (a *app) joinTokenListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List unused join tokens",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tokens, err := listAll(cmd.Context(), a, limit, func(c *client.Client, ctx context.Context, o client.ListOptions, opts ...client.CallOption) ([]messages.JoinTokenView, string, error) {
				return c.ListJoinTokens(ctx, o, opts...)
			})
			if err != nil {
				return err
			}
			return a.emit(newItemList(tokens), func(wide bool) [][]string { return joinTokenRows(tokens, wide, a.now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

func (a *app) joinTokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke an unused join token",
		Args:    exactArgs(1, "a join token id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				return c.RevokeJoinToken(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "join-token/%s revoked\n", args[0])
			return nil
		},
	}
}
