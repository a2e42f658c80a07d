package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// poolCommand is "otherix pool …".
func (a *app) poolCommand() *cobra.Command {
	cmd := groupCommand("pool", "Create and inspect storage pools", "pools")
	cmd.AddCommand(a.poolCreateCommand(), a.poolListCommand(), a.poolGetCommand(), a.poolDescribeCommand(),
		a.poolUpdateCommand(), a.poolDeleteCommand())
	return cmd
}

// poolNodesText is a pool's node set as the table shows it.
func poolNodesText(p *messages.StoragePool) string {
	if p.Spec.AllNodes {
		return "*"
	}
	return strings.Join(p.Spec.Nodes, ",")
}

// poolPathText is the pool's path, or what the empty path means.
func poolPathText(p *messages.StoragePool) string {
	if p.Spec.Path == "" {
		return "(each node's --pool-dir)"
	}
	return p.Spec.Path
}

// poolSums adds up a pool's node reports: ready nodes and free bytes.
func poolSums(p *messages.StoragePool) (ready, nodes int, free, allocated int64) {
	for _, s := range p.Status.Nodes {
		nodes++
		if s.Health == messages.PoolHealthOK {
			ready++
			free += s.FreeBytes
		}
		allocated += s.AllocatedBytes
	}
	if p.Spec.Shared && len(p.Status.Nodes) > 0 {
		// One filesystem: the same space seen from every node.
		free = 0
		for _, s := range p.Status.Nodes {
			free = max(free, s.FreeBytes)
		}
		allocated = p.Status.Nodes[0].AllocatedBytes
	}
	return ready, nodes, free, allocated
}

// poolRows is the table of pools; wide adds the path, node set and ID.
func poolRows(pools []*messages.StoragePool, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "DRIVER", "SHARED", "READY", "FREE", "ALLOCATED", "AGE"}
	if wide {
		head = append(head, "PATH", "NODES", "ID")
	}
	rows := [][]string{head}
	for _, p := range pools {
		ready, nodes, free, allocated := poolSums(p)
		r := []string{p.Name, p.Spec.Driver, fmt.Sprint(p.Spec.Shared), fmt.Sprintf("%d/%d", ready, nodes),
			bytesText(free), bytesText(allocated), age(p.CreatedAt, now)}
		if wide {
			r = append(r, poolPathText(p), poolNodesText(p), p.ID)
		}
		rows = append(rows, r)
	}
	return rows
}

func (a *app) poolCreateCommand() *cobra.Command {
	var req messages.CreatePoolRequest
	var nodes string
	cmd := &cobra.Command{
		Use:   "create NAME --driver dir|btrfs --path DIR [--shared] [--all-nodes|--nodes a,b]",
		Short: "Create a storage pool (admin)",
		Long: `Create a storage pool: a directory at the same path on each of its nodes.
Each node's agent realises the pool within a heartbeat: the dir driver makes
the directory (mode 0700) or checks it and claims it with an ownership
marker, refusing a path another cluster or pool claimed or a non-empty
directory nobody did; the btrfs driver also refuses a path not on btrfs.
--shared says a network filesystem (NFS, CephFS) is mounted at the path on
every node, so its volumes are tied to no node. Watch the result with:
otherix pool describe NAME.

Volumes are recorded in pools today but no agent creates their files yet.`,
		Example: `  otherix pool create fast --driver dir --path /srv/otherix/fast --all-nodes
  otherix pool create cow --driver btrfs --path /mnt/btrfs/otherix --nodes n1,n2`,
		Args: exactArgs(1, "a pool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if nodes != "" {
				req.Spec.Nodes = strings.Split(nodes, ",")
			}
			if req.Spec.AllNodes && nodes != "" {
				return usageError(fmt.Errorf("give --nodes or --all-nodes, not both"))
			}
			if _, err := messages.BuildPool(req); err != nil {
				return usageError(err)
			}
			var p *messages.StoragePool
			if err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				p, err = c.CreatePool(ctx, req, opt)
				return err
			}); err != nil {
				return err
			}
			if a.tabular() {
				fmt.Fprintf(a.stdout, "pool/%s created (%s at %s on %s)\n", p.Name, p.Spec.Driver, p.Spec.Path, poolNodesText(p))
				return nil
			}
			return a.emit(p, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Spec.Driver, "driver", "", "dir or btrfs (required)")
	f.StringVar(&req.Spec.Path, "path", "", "absolute directory on each node (required)")
	f.BoolVar(&req.Spec.Shared, "shared", false, "the path is one network filesystem mounted on every node of the pool")
	f.BoolVar(&req.Spec.AllNodes, "all-nodes", false, "every node has the pool")
	f.StringVar(&nodes, "nodes", "", "comma-separated nodes that have the pool")
	return cmd
}

func (a *app) poolUpdateCommand() *cobra.Command {
	var nodes string
	var all bool
	cmd := &cobra.Command{
		Use:   "update NAME --nodes a,b | --all-nodes",
		Short: "Change the nodes of a pool (admin)",
		Long: `Change which nodes have a pool. The driver, the path and whether it is
shared never change. A node that holds volumes of the pool cannot leave it
(pool_node_in_use).`,
		Example: `  otherix pool update fast --nodes n1,n2,n3`,
		Args:    exactArgs(1, "a pool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.UpdatePoolRequest
			switch {
			case cmd.Flags().Changed("nodes") && all:
				return usageError(fmt.Errorf("give --nodes or --all-nodes, not both"))
			case cmd.Flags().Changed("nodes"):
				list := strings.Split(nodes, ",")
				f := false
				req.Spec.Nodes, req.Spec.AllNodes = &list, &f
			case all:
				req.Spec.AllNodes = &all
			default:
				return usageError(fmt.Errorf("nothing to change: give --nodes or --all-nodes"))
			}
			var p *messages.StoragePool
			if err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				p, err = c.UpdatePool(ctx, args[0], req, opt)
				return err
			}); err != nil {
				return err
			}
			if a.tabular() {
				fmt.Fprintf(a.stdout, "pool/%s configured (nodes %s)\n", p.Name, poolNodesText(p))
				return nil
			}
			return a.emit(p, nil)
		},
	}
	cmd.Flags().StringVar(&nodes, "nodes", "", "comma-separated nodes that have the pool")
	cmd.Flags().BoolVar(&all, "all-nodes", false, "every node has the pool")
	return cmd
}

func (a *app) poolListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List storage pools",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pools, err := listAll(cmd.Context(), a, limit, (*client.Client).ListPools)
			if err != nil {
				return err
			}
			now := a.now()
			return a.emit(newItemList(pools), func(wide bool) [][]string { return poolRows(pools, wide, now) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

func (a *app) poolGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one storage pool",
		Args:  exactArgs(1, "a pool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.getPool(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			now := a.now()
			return a.emit(p, func(wide bool) [][]string { return poolRows([]*messages.StoragePool{p}, wide, now) })
		},
	}
}

func (a *app) poolDescribeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a storage pool and its state on each node",
		Args:  exactArgs(1, "a pool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.output == outputJSON || a.output == outputYAML {
				return usageError(fmt.Errorf("describe prints text only; use: otherix pool get %s -o %s", args[0], a.output))
			}
			p, err := a.getPool(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return describePool(a.stdout, p, a.now())
		},
	}
}

func (a *app) poolDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a storage pool (admin); refused while volumes are in it",
		Long: `Delete a pool's record. Refused (pool_in_use) while volumes are in it.
Nothing on the nodes is removed: the directory and its marker stay.`,
		Args: exactArgs(1, "a pool name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.deletePool(cmd.Context(), args[0])
		},
	}
}

func (a *app) deletePool(ctx context.Context, name string) error {
	if err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) error {
		return c.DeletePool(ctx, name, opt)
	}); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "pool/%s deleted\n", name)
	return nil
}

func (a *app) getPool(ctx context.Context, name string) (*messages.StoragePool, error) {
	var p *messages.StoragePool
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		p, err = c.GetPool(ctx, name)
		return err
	})
	return p, err
}

// describePool writes the multi-line view of a pool with a table of its
// nodes: what each last reported and what its volumes are allocated.
func describePool(w io.Writer, p *messages.StoragePool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(name string, value any) { fmt.Fprintf(tw, "%s:\t%v\n", name, value) }
	field("Name", p.Name)
	field("ID", p.ID)
	field("Driver", p.Spec.Driver)
	field("Path", poolPathText(p))
	field("Shared", p.Spec.Shared)
	if p.Spec.AllNodes {
		field("Nodes", "all")
	} else {
		field("Nodes", poolNodesText(p))
	}
	field("Created", when(p.CreatedAt, now))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(p.Status.Nodes) == 0 {
		fmt.Fprintln(w, "Status: no node of the pool is enrolled")
		return nil
	}
	fmt.Fprintln(w, "Status:")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tHEALTH\tTOTAL\tUSED\tFREE\tALLOCATED\tREPORTED\tPATH\tMESSAGE")
	for _, s := range p.Status.Nodes {
		reported := none
		if s.ObservedAt != nil {
			reported = age(*s.ObservedAt, now) + " ago"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Node, s.Health, bytesText(s.TotalBytes), bytesText(s.UsedBytes),
			bytesText(s.FreeBytes), bytesText(s.AllocatedBytes), reported, orNone(printable(s.Path)), orNone(printable(s.Message)))
	}
	return tw.Flush()
}
