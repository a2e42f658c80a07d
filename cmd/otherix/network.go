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

// networkCommand is "otherix network …".
func (a *app) networkCommand() *cobra.Command {
	cmd := groupCommand("network", "Create and inspect networks VMs attach to", "networks", "net")
	cmd.AddCommand(a.networkCreateCommand(), a.networkListCommand(), a.networkGetCommand(),
		a.networkDescribeCommand(), a.networkUpdateCommand(), a.networkDeleteCommand())
	return cmd
}

// networkRows is the table of networks; wide adds the gateway, its MAC and
// the ID.
func networkRows(nets []*messages.Network, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "CIDR", "TYPE", "VNI", "EGRESS", "MTU", "AGE"}
	if wide {
		head = append(head, "GATEWAY", "DNS", "GATEWAY MAC", "ID")
	}
	rows := [][]string{head}
	for _, n := range nets {
		vni := none
		if n.VNI != 0 {
			vni = strconv.Itoa(n.VNI)
		}
		r := []string{n.Name, n.CIDR, n.Type, vni, strconv.FormatBool(n.Egress), strconv.Itoa(n.MTU), age(n.CreatedAt, now)}
		if wide {
			r = append(r, n.Gateway, n.DNS, n.GatewayMAC, n.ID)
		}
		rows = append(rows, r)
	}
	return rows
}

func (a *app) networkCreateCommand() *cobra.Command {
	var req messages.CreateNetworkRequest
	cmd := &cobra.Command{
		Use:   "create NAME --cidr CIDR",
		Short: "Create a network (admin)",
		Long: `Create a network. The CIDR is an IPv4 network address from /8 to /29 that
overlaps no other network nor the cluster's overlay supernet. An overlay
network (the default) spans nodes over VXLAN inside WireGuard and gets a VNI;
a local network is a bridge on each node with no traffic between nodes.
--egress lets VMs reach the outside through their node (NAT). The MTU
defaults to what the encapsulation leaves (1390 for overlay, 1500 for local
on a 1500 underlay); --mtu may only lower it.

VMs attach with: otherix vm create NAME --network NETWORK[:IP]. Each NIC gets
an address of the network (the lowest free one unless IP is given); the
gateway and DNS server are always 169.254.1.1.`,
		Example: `  otherix network create backend --cidr 10.10.0.0/24
  otherix network create lab --cidr 192.168.50.0/24 --type local --egress`,
		Args: exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if req.CIDR == "" {
				return usageError(fmt.Errorf("--cidr is required"))
			}
			if _, err := messages.ParseNetworkCIDR("--cidr", req.CIDR); err != nil {
				return usageError(err)
			}
			if req.Type != "" && req.Type != messages.NetworkOverlay && req.Type != messages.NetworkLocal {
				return usageError(fmt.Errorf("--type %q: want %s or %s", req.Type, messages.NetworkOverlay, messages.NetworkLocal))
			}
			var n *messages.Network
			if err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				n, err = c.CreateNetwork(ctx, req, opt)
				return err
			}); err != nil {
				return err
			}
			if a.tabular() {
				fmt.Fprintf(a.stdout, "network/%s created (%s, %s)\n", n.Name, n.CIDR, n.Type)
				return nil
			}
			return a.emit(n, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.CIDR, "cidr", "", "IPv4 subnet, e.g. 10.10.0.0/24 (required)")
	f.StringVar(&req.Type, "type", "", "overlay (default) or local")
	f.BoolVar(&req.Egress, "egress", false, "let VMs reach the outside through their node (NAT)")
	f.IntVar(&req.MTU, "mtu", 0, "guest MTU (default: derived from the cluster's underlay MTU)")
	return cmd
}

func (a *app) networkUpdateCommand() *cobra.Command {
	var egress bool
	cmd := &cobra.Command{
		Use:   "update NAME --egress=true|false",
		Short: "Turn a network's egress on or off (admin)",
		Long: `Change a network in place. Only egress can change: --egress=true lets the
network's VMs reach the outside through their own node (NAT), --egress=false
stops it. VMs keep running and keep their addresses; each node applies the
change to its NAT rules within a heartbeat interval and a few seconds. The
CIDR, type and MTU never change on an existing network: delete and re-create
it for those.

The change is based on the network as read first: if it changed meanwhile the
update is refused (revision_conflict) and nothing changes. A network already
as asked is reported unchanged.`,
		Example: `  otherix network update backend --egress=true
  otherix network update backend --egress=false -o json`,
		Args: exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("egress") {
				return usageError(fmt.Errorf("nothing to change: --egress=true or --egress=false is required"))
			}
			have, err := a.getNetwork(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			n, changes, err := a.updateNetworkEgress(cmd.Context(), have, egress)
			if err != nil {
				return err
			}
			if !a.tabular() {
				return a.emit(n, nil)
			}
			if len(changes) == 0 {
				fmt.Fprintf(a.stdout, "network/%s unchanged (egress %t)\n", n.Name, n.Egress)
				return nil
			}
			fmt.Fprintf(a.stdout, "network/%s configured (%s)\n", n.Name, strings.Join(changes, ", "))
			return nil
		},
	}
	cmd.Flags().BoolVar(&egress, "egress", false, "let VMs reach the outside through their node (NAT): true or false (required)")
	return cmd
}

// updateNetworkEgress sets egress on a network read as have, based on that
// read (If-Match): a network that changed meanwhile is refused
// (revision_conflict) rather than overwritten blindly. A network already as
// asked is answered as read, with no request and no changes.
func (a *app) updateNetworkEgress(ctx context.Context, have *messages.Network, egress bool) (*messages.Network, []string, error) {
	if have.Egress == egress {
		return have, nil, nil
	}
	var n *messages.Network
	if err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
		if a.dryRun {
			var d *messages.DryRunResult
			d, err = c.DryRunUpdateNetwork(ctx, have.ID, client.UpdateNetworkRequest{Egress: &egress}, client.WithIfMatch(have.Revision))
			if err == nil {
				n = d.Network
			}
			return err
		}
		n, err = c.UpdateNetwork(ctx, have.ID, client.UpdateNetworkRequest{Egress: &egress}, opt, client.WithIfMatch(have.Revision))
		return err
	}); err != nil {
		return nil, nil, err
	}
	return n, []string{fmt.Sprintf("egress %t→%t", have.Egress, n.Egress)}, nil
}

func (a *app) networkListCommand() *cobra.Command {
	var limit int
	var watch bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch {
				return a.listAndWatch(cmd.Context(), kindNameNetwork, limit)
			}
			return a.getKind(cmd.Context(), kindNameNetwork, "", limit)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, watchFlagHelp)
	return cmd
}

func (a *app) networkGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one network",
		Args:  exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.getKind(cmd.Context(), kindNameNetwork, args[0], 0)
		},
	}
}

func (a *app) networkDescribeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a network in detail",
		Args:  exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.output == outputJSON || a.output == outputYAML {
				return usageError(fmt.Errorf("describe prints text only; use: otherix network get %s -o %s", args[0], a.output))
			}
			return a.describeKind(cmd.Context(), kindNameNetwork, args[0])
		},
	}
}

func (a *app) networkDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a network (admin); refused while VMs are attached",
		Args:    exactArgs(1, "a network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.deleteNetwork(cmd.Context(), args[0])
		},
	}
}

// deleteNetwork deletes one network and says so.
func (a *app) deleteNetwork(ctx context.Context, name string) error {
	if err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) error {
		return c.DeleteNetwork(ctx, name, opt)
	}); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "network/%s deleted\n", name)
	return nil
}

// getNetwork reads one network by name.
func (a *app) getNetwork(ctx context.Context, name string) (*messages.Network, error) {
	var n *messages.Network
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		n, err = c.GetNetwork(ctx, name)
		return err
	})
	return n, err
}

// describeNetwork writes the multi-line view of a network.
func describeNetwork(w io.Writer, n *messages.Network, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(name string, value any) { fmt.Fprintf(tw, "%s:\t%v\n", name, value) }
	field("Name", n.Name)
	field("ID", n.ID)
	field("CIDR", n.CIDR)
	field("Type", n.Type)
	vni := none
	if n.VNI != 0 {
		vni = strconv.Itoa(n.VNI)
	}
	field("VNI", vni)
	field("Egress", n.Egress)
	field("MTU", n.MTU)
	field("Gateway", n.Gateway+" ("+strings.ToLower(n.GatewayMAC)+")")
	field("DNS", n.DNS)
	field("Created", when(n.CreatedAt, now))
	return tw.Flush()
}
