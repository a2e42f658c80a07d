package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// volumeCommand is "otherix volume …".
func (a *app) volumeCommand() *cobra.Command {
	cmd := groupCommand("volume", "Create and inspect volumes (not yet usable by VMs)", "volumes", "vol")
	cmd.AddCommand(a.volumeCreateCommand(), a.volumeListCommand(), a.volumeGetCommand(), a.volumeDescribeCommand(),
		a.volumeResizeCommand(), a.volumeDeleteCommand())
	return cmd
}

// parseVolumeSize reads a volume size ("1Gi", "512Mi", "20", "4096B") as
// bytes; a bare number is GiB, as for VM disks.
func parseVolumeSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("%q is not a size: want a number with an optional unit, such as 512Mi, 2Gi or 20G", s)
	}
	shift := uint(30)
	if unit != "" {
		u := strings.TrimSuffix(unit, "b")
		sh, ok := unitShift[u]
		if !ok || (u == "" && unit != "b") {
			return 0, fmt.Errorf("%q has an unknown unit %q: use B, Ki, Mi, Gi or Ti (or K, M, G, T)", s, t[i:])
		}
		shift = sh
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	b := math.Ldexp(v, int(shift))
	if b != math.Trunc(b) || b > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	size := int64(b)
	if err := messages.ValidateVolumeSize("--size", size); err != nil {
		return 0, err
	}
	return size, nil
}

// sizeText prints bytes in the largest binary unit that divides them.
func sizeText(b int64) string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"Ti", 40}, {"Gi", 30}, {"Mi", 20}, {"Ki", 10}} {
		if b >= 1<<u.shift && b%(1<<u.shift) == 0 {
			return strconv.FormatInt(b>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(b, 10) + "B"
}

// volumeRows is the table of volumes; wide adds the owner node, the
// attachment and the ID.
func volumeRows(vols []*messages.Volume, wide bool, now time.Time) [][]string {
	head := []string{"NAME", "POOL", "NODE", "SIZE", "PHASE", "AGE"}
	if wide {
		head = append(head, "OWNER NODE", "ATTACHED TO", "ID")
	}
	rows := [][]string{head}
	for _, v := range vols {
		r := []string{v.Name, v.Spec.Pool, orNone(v.Status.Node), sizeText(v.Spec.SizeBytes), v.Status.Phase, age(v.CreatedAt, now)}
		if wide {
			r = append(r, orNone(v.Status.OwnerNode), orNone(v.Status.AttachedTo), v.ID)
		}
		rows = append(rows, r)
	}
	return rows
}

func (a *app) volumeCreateCommand() *cobra.Command {
	var req messages.CreateVolumeRequest
	var size string
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE [--pool P] [--node N]",
		Short: "Create a volume",
		Long: `Create a volume of --size (a multiple of 512 bytes; a bare number is GiB) in
--pool (the cluster's default pool when absent), on --node or, for a
node-local pool, on the pool's node with the most free space. A size above
the free space the node last reported is refused (insufficient_storage).

Not done yet: no agent creates the volume's file and no VM can attach it.
The volume stays pending, with the condition Realised=False.`,
		Example: `  otherix volume create data --size 20Gi
  otherix volume create scratch --size 512Mi --pool fast --node n1`,
		Args: exactArgs(1, "a volume name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if size == "" {
				return usageError(fmt.Errorf("--size is required"))
			}
			var err error
			if req.Spec.SizeBytes, err = parseVolumeSize(size); err != nil {
				return usageError(err)
			}
			if err := messages.ValidateVolumeRequest(&req); err != nil {
				return usageError(err)
			}
			var v *messages.Volume
			if err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				v, err = c.CreateVolume(ctx, req, opt)
				return err
			}); err != nil {
				return err
			}
			if a.tabular() {
				where := "pool " + v.Spec.Pool
				if v.Status.Node != "" {
					where += " on " + v.Status.Node
				}
				fmt.Fprintf(a.stdout, "volume/%s created (%s in %s, %s: not realised on disk yet)\n",
					v.Name, sizeText(v.Spec.SizeBytes), where, v.Status.Phase)
				return nil
			}
			return a.emit(v, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&size, "size", "", "size, e.g. 20Gi or 512Mi (required)")
	f.StringVar(&req.Spec.Pool, "pool", "", "pool (default: the cluster's default pool)")
	f.StringVar(&req.Spec.Node, "node", "", "node of the pool to put the volume on")
	return cmd
}

func (a *app) volumeResizeCommand() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "resize NAME --size SIZE",
		Short: "Grow a volume",
		Long: `Grow a volume to --size. Volumes never shrink (volume_shrink_unsupported); the
growth must fit the free space its node last reported.`,
		Example: `  otherix volume resize data --size 40Gi`,
		Args:    exactArgs(1, "a volume name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if size == "" {
				return usageError(fmt.Errorf("--size is required"))
			}
			n, err := parseVolumeSize(size)
			if err != nil {
				return usageError(err)
			}
			var v *messages.Volume
			if err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				v, err = c.ResizeVolume(ctx, args[0], n, opt)
				return err
			}); err != nil {
				return err
			}
			if a.tabular() {
				fmt.Fprintf(a.stdout, "volume/%s resized to %s\n", v.Name, sizeText(v.Spec.SizeBytes))
				return nil
			}
			return a.emit(v, nil)
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "the new size, e.g. 40Gi (required)")
	return cmd
}

func (a *app) volumeListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vols, err := listAll(cmd.Context(), a, limit, (*client.Client).ListVolumes)
			if err != nil {
				return err
			}
			now := a.now()
			return a.emit(newItemList(vols), func(wide bool) [][]string { return volumeRows(vols, wide, now) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

func (a *app) volumeGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME|ID",
		Short: "Show one volume",
		Args:  exactArgs(1, "a volume name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.getVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			now := a.now()
			return a.emit(v, func(wide bool) [][]string { return volumeRows([]*messages.Volume{v}, wide, now) })
		},
	}
}

func (a *app) volumeDescribeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME|ID",
		Short: "Show a volume in detail",
		Args:  exactArgs(1, "a volume name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.output == outputJSON || a.output == outputYAML {
				return usageError(fmt.Errorf("describe prints text only; use: otherix volume get %s -o %s", args[0], a.output))
			}
			v, err := a.getVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return describeVolume(a.stdout, v, a.now())
		},
	}
}

func (a *app) volumeDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete a volume",
		Args:    exactArgs(1, "a volume name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.deleteVolume(cmd.Context(), args[0])
		},
	}
}

func (a *app) deleteVolume(ctx context.Context, ref string) error {
	if err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) error {
		return c.DeleteVolume(ctx, ref, opt)
	}); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "volume/%s deleted\n", ref)
	return nil
}

func (a *app) getVolume(ctx context.Context, ref string) (*messages.Volume, error) {
	var v *messages.Volume
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		v, err = c.GetVolume(ctx, ref)
		return err
	})
	return v, err
}

// describeVolume writes the multi-line view of a volume.
func describeVolume(w io.Writer, v *messages.Volume, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(name string, value any) { fmt.Fprintf(tw, "%s:\t%v\n", name, value) }
	field("Name", v.Name)
	field("ID", v.ID)
	field("Owner", v.Owner)
	field("Pool", v.Spec.Pool)
	field("Size", fmt.Sprintf("%s (%d bytes)", sizeText(v.Spec.SizeBytes), v.Spec.SizeBytes))
	field("Phase", v.Status.Phase)
	field("Node", orNone(v.Status.Node))
	field("Owner node", orNone(v.Status.OwnerNode))
	field("Attached to", orNone(v.Status.AttachedTo))
	field("Generation", v.Generation)
	field("Created", when(v.CreatedAt, now))
	field("Message", orNone(v.Status.Message))
	for _, c := range v.Status.Conditions {
		field("Condition "+c.Type, fmt.Sprintf("%s (%s) %s", c.Status, c.Reason, c.Message))
	}
	return tw.Flush()
}
