package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// The kubectl-style verbs "get", "describe" and "delete" take a resource
// kind and a name ("otherix get vm web-1", or "vm/web-1"). They do what the
// noun's own verb does ("otherix vm get web-1").

// Resource kinds the kind verbs know, singular.
const (
	kindNameVM      = "vm"
	kindNameNode    = "node"
	kindNameTask    = "task"
	kindNameNetwork = "network"
	kindNamePool    = "pool"
	kindNameVolume  = "volume"
)

// resourceKinds lists the kinds in the order usage errors name them.
var resourceKinds = []string{kindNameVM, kindNameNode, kindNameNetwork, kindNamePool, kindNameVolume, kindNameTask}

const kindsHelp = `KIND is vm, node, network, pool, volume or task (plural and any case accepted: vms, Nodes, TASKS).
NAME may also be written KIND/NAME, as in vm/web-1.`

// resolveKind reads a kind as typed, singular or plural, in any case.
func resolveKind(s string) (string, error) {
	k := strings.ToLower(s)
	for _, kind := range resourceKinds {
		if k == kind || k == kind+"s" {
			return kind, nil
		}
	}
	return "", usageError(fmt.Errorf("unknown kind %q: want one of %s", s, strings.Join(resourceKinds, ", ")))
}

// kindArgs reads "KIND NAME", "KIND/NAME" or (when optional) "KIND" alone.
func kindArgs(args []string, nameOptional bool) (kind, name string, err error) {
	if len(args) == 1 {
		if k, n, ok := strings.Cut(args[0], "/"); ok {
			args = []string{k, n}
		}
	}
	switch {
	case len(args) == 0:
		return "", "", usageError(fmt.Errorf("a kind is required: one of %s", strings.Join(resourceKinds, ", ")))
	case len(args) > 2:
		return "", "", usageError(fmt.Errorf("want KIND NAME, got %d arguments", len(args)))
	}
	if kind, err = resolveKind(args[0]); err != nil {
		return "", "", err
	}
	if len(args) == 2 {
		name = args[1]
	}
	if name == "" && !nameOptional {
		return "", "", usageError(fmt.Errorf("a %s name is required", kind))
	}
	return kind, name, nil
}

// getCommand is "otherix get KIND [NAME]".
func (a *app) getCommand() *cobra.Command {
	var limit int
	var watch bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show one resource, or list every resource of a kind",
		Long: `Show one resource by kind and name, or without a name list every resource of
the kind. -o json|yaml prints them exactly as the API returns them.

` + kindsHelp,
		Example: `  otherix get vms
  otherix get vms -w
  otherix get vm web-1 -o yaml
  otherix get node/rack1-n3 -o wide`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := kindArgs(args, true)
			if err != nil {
				return err
			}
			if watch {
				if name != "" {
					return usageError(errors.New("-w follows a whole kind: drop the name"))
				}
				return a.listAndWatch(cmd.Context(), kind, limit)
			}
			return a.getKind(cmd.Context(), kind, name, limit)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API when listing (1-200)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, watchFlagHelp)
	return cmd
}

// getKind prints one resource or, with no name, every resource of kind.
func (a *app) getKind(ctx context.Context, kind, name string, limit int) error {
	now := a.now()
	switch {
	case kind == kindNameVM && name == "":
		vms, err := listAll(ctx, a, limit, (*client.Client).ListVMs)
		if err != nil {
			return err
		}
		return a.emit(newItemList(vms), func(wide bool) [][]string {
			var owners map[string]string
			if wide {
				owners = a.ownerEmails(ctx, vms)
			}
			return vmRowsWithOwners(vms, wide, now, owners)
		})
	case kind == kindNameVM:
		vm, err := a.getVM(ctx, name)
		if err != nil {
			return err
		}
		return a.emit(vm, func(wide bool) [][]string { return vmRows([]*messages.VM{vm}, wide, now) })
	case kind == kindNameNode && name == "":
		nodes, err := listAll(ctx, a, limit, func(c *client.Client, ctx context.Context, o client.ListOptions, opts ...client.CallOption) ([]*messages.Node, string, error) {
			return c.ListNodes(ctx, o, opts...)
		})
		if err != nil {
			return err
		}
		return a.emit(newItemList(nodes), func(wide bool) [][]string { return nodeRows(nodes, wide, now) })
	case kind == kindNameNode:
		n, err := a.getNode(ctx, name)
		if err != nil {
			return err
		}
		return a.emit(n, func(wide bool) [][]string { return nodeRows([]*messages.Node{n}, wide, now) })
	case kind == kindNameNetwork && name == "":
		nets, err := listAll(ctx, a, limit, (*client.Client).ListNetworks)
		if err != nil {
			return err
		}
		return a.emit(newItemList(nets), func(wide bool) [][]string { return networkRows(nets, wide, now) })
	case kind == kindNameNetwork:
		n, err := a.getNetwork(ctx, name)
		if err != nil {
			return err
		}
		return a.emit(n, func(wide bool) [][]string { return networkRows([]*messages.Network{n}, wide, now) })
	case kind == kindNamePool && name == "":
		pools, err := listAll(ctx, a, limit, (*client.Client).ListPools)
		if err != nil {
			return err
		}
		return a.emit(newItemList(pools), func(wide bool) [][]string { return poolRows(pools, wide, now) })
	case kind == kindNamePool:
		p, err := a.getPool(ctx, name)
		if err != nil {
			return err
		}
		return a.emit(p, func(wide bool) [][]string { return poolRows([]*messages.StoragePool{p}, wide, now) })
	case kind == kindNameVolume && name == "":
		vols, err := listAll(ctx, a, limit, (*client.Client).ListVolumes)
		if err != nil {
			return err
		}
		return a.emit(newItemList(vols), func(wide bool) [][]string { return volumeRows(vols, wide, now) })
	case kind == kindNameVolume:
		v, err := a.getVolume(ctx, name)
		if err != nil {
			return err
		}
		return a.emit(v, func(wide bool) [][]string { return volumeRows([]*messages.Volume{v}, wide, now) })
	case kind == kindNameTask && name == "":
		tasks, err := listAll(ctx, a, limit, (*client.Client).ListTasks)
		if err != nil {
			return err
		}
		return a.emit(newItemList(tasks), func(wide bool) [][]string { return taskRows(tasks, wide, now) })
	default:
		t, err := a.getTask(ctx, name)
		if err != nil {
			return err
		}
		return a.printTask(t)
	}
}

// describeCommand is "otherix describe KIND NAME".
func (a *app) describeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show one resource in detail, for a human reader",
		Long: `Show one resource in detail for a human reader. For scripts use
"otherix get KIND NAME -o json", whose shape is stable; this text is not.

` + kindsHelp,
		Example: `  otherix describe vm web-1
  otherix describe task 01J9Z3K6V2J8Q4W1X5Y7Z9A0BC`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := kindArgs(args, false)
			if err != nil {
				return err
			}
			if a.output == outputJSON || a.output == outputYAML {
				return usageError(fmt.Errorf("describe prints text only; use: otherix get %s %s -o %s", kind, name, a.output))
			}
			return a.describeKind(cmd.Context(), kind, name)
		},
	}
}

func (a *app) describeKind(ctx context.Context, kind, name string) error {
	switch kind {
	case kindNameVM:
		vm, err := a.getVM(ctx, name)
		if err != nil {
			return err
		}
		return describeVM(a.stdout, vm, a.activeTask(ctx, vm), a.ownerEmails(ctx, []*messages.VM{vm})[vm.Owner], a.now())
	case kindNameNode:
		n, err := a.getNode(ctx, name)
		if err != nil {
			return err
		}
		return describeNode(a.stdout, n, a.now())
	case kindNameNetwork:
		n, err := a.getNetwork(ctx, name)
		if err != nil {
			return err
		}
		return describeNetwork(a.stdout, n, a.now())
	case kindNamePool:
		p, err := a.getPool(ctx, name)
		if err != nil {
			return err
		}
		return describePool(a.stdout, p, a.now())
	case kindNameVolume:
		v, err := a.getVolume(ctx, name)
		if err != nil {
			return err
		}
		return describeVolume(a.stdout, v, a.now())
	}
	t, err := a.getTask(ctx, name)
	if err != nil {
		return err
	}
	return describeTask(a.stdout, t, a.now())
}

// deleteKind deletes one resource named on the command line.
func (a *app) deleteKind(ctx context.Context, kind, name string, force bool, w waitFlags) error {
	switch kind {
	case kindNameVM:
		return a.vmTask(ctx, w, func(ctx context.Context, c *client.Client, opt client.CallOption) (*client.Accepted, error) {
			return c.DeleteVM(ctx, name, force, opt)
		})
	case kindNameNode:
		if w.wait {
			return usageError(fmt.Errorf("--wait does not apply to nodes: their deletion is immediate"))
		}
		if err := a.call(ctx, func(ctx context.Context, c *client.Client) error {
			return c.DeleteNode(ctx, name, force)
		}); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "node/%s deleted\n", name)
		return nil
	case kindNameNetwork:
		if w.wait {
			return usageError(fmt.Errorf("--wait does not apply to networks: their deletion is immediate"))
		}
		return a.deleteNetwork(ctx, name)
	case kindNamePool, kindNameVolume:
		if w.wait {
			return usageError(fmt.Errorf("--wait does not apply to %ss: their deletion is immediate", kind))
		}
		if kind == kindNamePool {
			return a.deletePool(ctx, name)
		}
		return a.deleteVolume(ctx, name)
	}
	return usageError(fmt.Errorf("tasks cannot be deleted: finished tasks are cleaned up after a retention period; cancel a pending one with: otherix task cancel %s", name))
}

// getNode reads one node by name.
func (a *app) getNode(ctx context.Context, name string) (*messages.Node, error) {
	var n *messages.Node
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		n, err = c.GetNode(ctx, name)
		return err
	})
	return n, err
}

// getTask reads one task by id.
func (a *app) getTask(ctx context.Context, id string) (*messages.Task, error) {
	var t *messages.Task
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		t, err = c.GetTask(ctx, id)
		return err
	})
	return t, err
}

// describeTask writes the multi-line view of a task.
func describeTask(w io.Writer, t *messages.Task, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(name string, value any) { fmt.Fprintf(tw, "%s:\t%v\n", name, value) }
	field("ID", t.ID)
	field("Kind", t.Kind)
	field("State", t.State)
	field("Progress", fmt.Sprintf("%d%%", t.Progress))
	field("Message", orNone(t.Message))
	field("Target", strings.TrimSpace(t.Target.Kind+"/"+targetName(t.Target)))
	field("Owner", orNone(t.Owner))
	field("Created", when(t.CreatedAt, now))
	field("Updated", when(t.UpdatedAt, now))
	if t.FinishedAt != nil {
		field("Finished", when(*t.FinishedAt, now))
	}
	field("Error", orNone(taskErrorText(t.Error)))
	field("Job", orNone(t.JobID))
	field("Agent task", orNone(t.AgentTaskID))
	return tw.Flush()
}
