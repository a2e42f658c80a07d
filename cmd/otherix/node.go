package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

func (a *app) nodeCommand() *cobra.Command {
	cmd := groupCommand("node", "Inspect enrolled nodes and manage join tokens", "nodes")
	cmd.AddCommand(a.nodeListCommand(), a.nodeGetCommand(), a.nodeDescribeCommand(), a.nodeTopCommand(),
		a.nodeCordonCommand(true), a.nodeCordonCommand(false), a.nodeDeleteCommand(), a.joinTokenCommand())
	return cmd
}

// nodeRows is the table of nodes; wide adds capacity, the accelerator, ID,
// CERT EXPIRES and FINGERPRINT.
func nodeRows(nodes []*messages.Node, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "PHASE", "CORDONED", "ARCH", "AGENT", "HEARTBEAT", "ENROLLED"}
	if wide {
		head = append(head, "CPUS", "MEMORY", "ACCEL", "VMS", "ID", "CERT EXPIRES", "CERT FINGERPRINT")
	}
	rows := [][]string{head}
	for _, n := range nodes {
		r := []string{n.Name, n.Phase, strconv.FormatBool(n.Cordoned), orNone(n.Arch), orNone(n.AgentVersion),
			heartbeatAge(n, now), age(n.EnrolledAt, now)}
		if wide {
			cpus, mem, accel := none, none, none
			if c := n.Status.Capacity; c != nil {
				cpus, mem, accel = strconv.Itoa(c.CPUs), mib(int(c.MemoryMiB)), orNone(c.Accelerator)
			}
			r = append(r, cpus, mem, accel, strconv.Itoa(n.Status.VMCount))
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
	var watch bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List enrolled nodes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch {
				return a.listAndWatch(cmd.Context(), kindNameNode, limit)
			}
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
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, watchFlagHelp)
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

// heartbeatAge is how long ago the node last heartbeated.
func heartbeatAge(n *messages.Node, now time.Time) string {
	if n.Status.LastHeartbeatAt == nil {
		return none
	}
	return age(*n.Status.LastHeartbeatAt, now) + " ago"
}

func (a *app) nodeDescribeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a node in detail: phase, last heartbeat, capacity, versions, pools",
		Long: `Show a node in detail for a human reader. For scripts use "node get -o json",
whose shape is stable; this text is not.`,
		Args: exactArgs(1, "a node name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.output == outputJSON || a.output == outputYAML {
				return usageError(fmt.Errorf("describe prints text only; use: otherix node get %s -o %s", args[0], a.output))
			}
			var n *messages.Node
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				n, err = c.GetNode(ctx, args[0])
				return err
			}); err != nil {
				return err
			}
			return describeNode(a.stdout, n, a.now())
		},
	}
}

// describeNode writes the multi-line view of a node.
func describeNode(w io.Writer, n *messages.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(indent int, name string, value any) {
		fmt.Fprintf(tw, "%s%s:\t%v\n", strings.Repeat("  ", indent), name, value)
	}
	st := n.Status
	field(0, "Name", n.Name)
	field(0, "ID", n.ID)
	field(0, "Phase", n.Phase)
	field(0, "Cordoned", n.Cordoned)
	field(0, "Arch", orNone(n.Arch))
	field(0, "Agent version", orNone(n.AgentVersion))
	field(0, "Enrolled", when(n.EnrolledAt, now))
	lastHB := none
	if st.LastHeartbeatAt != nil {
		lastHB = when(*st.LastHeartbeatAt, now)
	}
	field(0, "Last heartbeat", lastHB)
	field(0, "Message", orNone(st.Message))
	fmt.Fprintln(tw, "Capacity:")
	if c := st.Capacity; c != nil {
		field(1, "CPUs", c.CPUs)
		field(1, "Memory", mib(int(c.MemoryMiB)))
		field(1, "Accelerator", orNone(c.Accelerator))
		kvm := strconv.FormatBool(c.KVM)
		if c.KVMReason != "" {
			kvm += " (" + c.KVMReason + ")"
		}
		field(1, "KVM", kvm)
	} else {
		field(1, "Reported", "not yet")
	}
	field(0, "QEMU", orNone(strings.Join(st.QEMUVersions, ", ")))
	field(0, "VMs", st.VMCount)
	field(0, "Cached images", st.ImageCount)
	if len(st.Pools) > 0 {
		fmt.Fprintln(tw, "Pools:")
		for _, p := range st.Pools {
			field(1, p.Name, fmt.Sprintf("%s (%s free of %s)", p.Path, bytesText(p.FreeBytes), bytesText(p.TotalBytes)))
		}
	}
	field(0, "Certificate", fmt.Sprintf("%s, expires %s", orNone(n.CertFingerprint), n.CertNotAfter.UTC().Format(time.RFC3339)))
	if err := tw.Flush(); err != nil {
		return err
	}
	// HostNetworkConflict names each prefix the agent refused and what of
	// the host's it collides with.
	return describeConditions(w, st.Conditions, now)
}

// bytesText renders a size in GiB with one decimal.
func bytesText(b int64) string { return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30)) }

// nodeCordonCommand is "node cordon" (cordon true) or "node uncordon".
func (a *app) nodeCordonCommand(cordon bool) *cobra.Command {
	use, short, done := "cordon NAME", "Stop placing new VMs on a node", "cordoned"
	if !cordon {
		use, short, done = "uncordon NAME", "Let VMs be placed on a cordoned node again", "uncordoned"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "a node name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n *messages.Node
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				if cordon {
					n, err = c.CordonNode(ctx, args[0])
				} else {
					n, err = c.UncordonNode(ctx, args[0])
				}
				return err
			}); err != nil {
				return err
			}
			if a.output == outputJSON || a.output == outputYAML {
				return a.emit(n, nil)
			}
			fmt.Fprintf(a.stdout, "node/%s %s\n", n.Name, done)
			return nil
		},
	}
}

func (a *app) nodeDeleteCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a node (admin); its certificate is refused from then on",
		Long: `Delete a node. It is refused while VMs are placed on the node unless
--force. The agent's certificate is refused from then on; enroll it again
with a new join token.`,
		Args: exactArgs(1, "a node name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				return c.DeleteNode(ctx, args[0], force)
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "node/%s deleted\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even with VMs placed on the node")
	return cmd
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
			if done, err := a.emitCreatedToken(created); done {
				return err
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

// emitCreatedToken warns that a join token is shown only now and, for -o
// json|yaml, prints it as the API answered; done is false when the caller
// prints its own text form.
func (a *app) emitCreatedToken(created *messages.CreatedJoinToken) (done bool, err error) {
	fmt.Fprintln(a.stderr, "warning: this is the only time the token is shown; use it or store it now")
	switch a.output {
	case outputJSON:
		return true, writeJSON(a.stdout, created)
	case outputYAML:
		return true, writeYAML(a.stdout, created)
	}
	return false, nil
}
