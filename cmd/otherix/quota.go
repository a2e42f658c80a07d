package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

func (a *app) userQuotaCommand() *cobra.Command {
	cmd := groupCommand("quota", "Show and set a user's quota (admin)", "quotas")
	cmd.AddCommand(a.userQuotaGetCommand(), a.userQuotaSetCommand())
	return cmd
}

// quotaRows is a quota as a table: one row per resource, what the user's
// VMs use and the limit.
func quotaRows(v *messages.QuotaView) [][]string {
	limit := func(p *int64, unit string) string {
		if p == nil {
			return "unlimited"
		}
		return strconv.FormatInt(*p, 10) + unit
	}
	q, u := v.Quota, v.Usage
	return [][]string{
		{"RESOURCE", "USED", "LIMIT"},
		{"vms", strconv.FormatInt(u.VMs, 10), limit(q.VMs, "")},
		{"cpus", strconv.FormatInt(u.CPUs, 10), limit(q.CPUs, "")},
		{"memory", strconv.FormatInt(u.MemoryMiB, 10) + "Mi", limit(q.MemoryMiB, "Mi")},
		{"disk", strconv.FormatInt(u.DiskGiB, 10) + "Gi", limit(q.DiskGiB, "Gi")},
	}
}

func (a *app) userQuotaGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID|EMAIL",
		Short: "Show a user's quota and what their VMs use",
		Args:  exactArgs(1, "a user id or email"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.userID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var v *messages.QuotaView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				v, err = c.GetQuota(ctx, id)
				return err
			}); err != nil {
				return err
			}
			return a.emit(v, func(bool) [][]string { return quotaRows(v) })
		},
	}
}

// quotaFlag is one --vms/--cpus/--memory/--disk value: a number (a size
// for memory and disk), 0 for none allowed, or "unlimited".
type quotaFlag struct {
	name  string
	parse func(string) (int, error)
	set   bool
	value string
}

func (f *quotaFlag) apply(dst **int64) error {
	if !f.set {
		return nil
	}
	switch v := strings.TrimSpace(f.value); v {
	case "unlimited", "none", "-1":
		*dst = nil
		return nil
	case "0":
		zero := int64(0)
		*dst = &zero
		return nil
	default:
		n, err := f.parse(v)
		if err != nil {
			return usageError(fmt.Errorf("--%s: %w", f.name, err))
		}
		x := int64(n)
		*dst = &x
		return nil
	}
}

func count(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

func (a *app) userQuotaSetCommand() *cobra.Command {
	flags := []*quotaFlag{
		{name: "vms", parse: count}, {name: "cpus", parse: count},
		{name: "memory", parse: parseMemoryMiB}, {name: "disk", parse: parseDiskGiB},
	}
	cmd := &cobra.Command{
		Use:   "set ID|EMAIL [--vms N] [--cpus N] [--memory SIZE] [--disk SIZE]",
		Short: "Set a user's quota (admin)",
		Long: `Set limits on the sum over a user's VMs. Limits not named keep their current
value; "unlimited" removes one, 0 allows none. Every VM counts from its create
to its delete, running or not. A limit below what the user uses now refuses
their next create or growth (quota_exceeded), never what exists.`,
		Example: `  otherix user quota set dev@example.com --vms 5 --cpus 8 --memory 16Gi --disk 200Gi
  otherix user quota set dev@example.com --disk unlimited`,
		Args: exactArgs(1, "a user id or email"),
		RunE: func(cmd *cobra.Command, args []string) error {
			named := false
			for _, f := range flags {
				f.set = cmd.Flags().Changed(f.name)
				named = named || f.set
			}
			if !named {
				return usageError(fmt.Errorf("name at least one of --vms, --cpus, --memory, --disk"))
			}
			id, err := a.userID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var v *messages.QuotaView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				cur, err := c.GetQuota(ctx, id)
				if err != nil {
					return err
				}
				q := cur.Quota
				for i, dst := range []**int64{&q.VMs, &q.CPUs, &q.MemoryMiB, &q.DiskGiB} {
					if err := flags[i].apply(dst); err != nil {
						return err
					}
				}
				v, err = c.SetQuota(ctx, id, q)
				return err
			}); err != nil {
				return err
			}
			return a.emit(v, func(bool) [][]string { return quotaRows(v) })
		},
	}
	for _, f := range flags {
		help := map[string]string{
			"vms":    "most VMs the user may have (a number, 0, or unlimited)",
			"cpus":   "most vCPUs over all their VMs",
			"memory": "most memory over all their VMs (512Mi, 16Gi, …)",
			"disk":   "most disk over all their VMs (100Gi, 1Ti, …)",
		}[f.name]
		cmd.Flags().StringVar(&f.value, f.name, "", help)
	}
	return cmd
}

// quotaColumns are the quota columns `user get` adds: used/limit per
// resource.
func quotaColumns(v *messages.QuotaView) (head, row []string) {
	r := quotaRows(v)
	for _, line := range r[1:] {
		head = append(head, strings.ToUpper(line[0]))
		row = append(row, line[1]+"/"+strings.Replace(line[2], "unlimited", "-", 1))
	}
	return head, row
}
