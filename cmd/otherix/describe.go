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

func (a *app) vmDescribeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME|ID",
		Short: "Show a VM in detail: spec, status, conditions and its task in progress",
		Long: `Show a VM in detail for a human reader. For scripts use "vm get -o json",
whose shape is stable; this text is not.`,
		Args: exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.output == outputJSON || a.output == outputYAML {
				return usageError(fmt.Errorf("describe prints text only; use: otherix vm get %s -o %s", args[0], a.output))
			}
			vm, err := a.getVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			task := a.activeTask(cmd.Context(), vm)
			owners := a.ownerEmails(cmd.Context(), []*messages.VM{vm})
			if err := describeVM(a.stdout, vm, task, owners[vm.Owner], a.now()); err != nil {
				return err
			}
			return describeMetrics(a.stdout, a.vmMetrics(cmd.Context(), vm), a.now())
		},
	}
}

// activeTask fetches the VM's task in progress. It is best effort: the task
// may end between the two reads, and the id alone still tells the reader
// something, so a failure here is not the command's failure.
func (a *app) activeTask(ctx context.Context, vm *messages.VM) *messages.Task {
	if vm.Status.ActiveTask == "" {
		return nil
	}
	var t *messages.Task
	if err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		t, err = c.GetTask(ctx, vm.Status.ActiveTask)
		return err
	}); err != nil {
		return nil
	}
	return t
}

// vmMetrics fetches the VM's latest sample, best effort like activeTask: a
// control plane without the endpoint or a failed read leaves the section
// empty rather than failing describe.
func (a *app) vmMetrics(ctx context.Context, vm *messages.VM) *messages.VMMetricsView {
	var v *messages.VMMetricsView
	if err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		v, err = c.VMMetrics(ctx, vm.ID)
		return err
	}); err != nil {
		return nil
	}
	return v
}

// describeVM writes the multi-line view of a VM.
// ownerEmail is the owner's email when the caller may know it.
func describeVM(w io.Writer, vm *messages.VM, task *messages.Task, ownerEmail string, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	field := func(indent int, name string, value any) {
		fmt.Fprintf(tw, "%s%s:\t%v\n", strings.Repeat("  ", indent), name, value)
	}
	s, st := vm.Spec, vm.Status
	field(0, "Name", vm.Name)
	field(0, "ID", vm.ID)
	owner := vm.Owner
	if ownerEmail != "" {
		owner = ownerEmail + " (" + vm.Owner + ")"
	}
	field(0, "Owner", owner)
	field(0, "Created", when(vm.CreatedAt, now))
	field(0, "Updated", when(vm.UpdatedAt, now))
	field(0, "Generation", fmt.Sprintf("%d (observed %d)", vm.Generation, st.ObservedGeneration))
	if restartPending(vm) {
		field(0, "Restart pending", "the spec changed since the VM started; it takes effect when the VM restarts (otherix vm reboot)")
	}
	fmt.Fprintln(tw, "Spec:")
	field(1, "Image", s.Image.URL)
	if s.Image.SHA256 != "" {
		field(1, "SHA-256", s.Image.SHA256)
	}
	field(1, "CPUs", s.CPUs)
	field(1, "Memory", mib(s.MemoryMiB))
	field(1, "Disk", gib(s.DiskGiB))
	field(1, "Power", s.PowerState)
	field(1, "Arch", orDefault(s.Arch, messages.ArchAMD64))
	field(1, "Node", orDefault(s.Node, "(any)"))
	field(1, "User data", userDataSize(s.UserData))
	field(1, "Networks", networks(s.Networks))
	fmt.Fprintln(tw, "Status:")
	field(1, "Phase", orNone(st.Phase))
	field(1, "Node", orNone(st.Node))
	if st.Pid > 0 {
		field(1, "PID", st.Pid)
	}
	if st.StartedAt != nil {
		field(1, "Started", when(*st.StartedAt, now))
	}
	if st.ObservedAt != nil {
		field(1, "Observed", when(*st.ObservedAt, now))
	}
	field(1, "Addresses", orNone(strings.Join(st.Addresses, ", ")))
	if len(st.NICs) > 0 {
		fmt.Fprintln(tw, "  NICs:")
		for i, nic := range st.NICs {
			field(2, fmt.Sprintf("nic%d", i), fmt.Sprintf("%s %s/%d mac %s mtu %d", nic.Network, nic.IP, nic.PrefixLen, nic.MAC, nic.MTU))
		}
	}
	field(1, "Message", orNone(st.Message))
	field(0, "Active task", activeTaskText(st.ActiveTask, task, now))
	if err := tw.Flush(); err != nil {
		return err
	}
	return describeConditions(w, st.Conditions, now)
}

// restartPending reports whether a live VM runs an older spec than the one
// asked for: a change it picks up only when it restarts.
func restartPending(vm *messages.VM) bool {
	live := vm.Status.Phase == messages.PhaseRunning || vm.Status.Phase == messages.PhasePaused
	return live && vm.Status.ObservedGeneration > 0 && vm.Generation > vm.Status.ObservedGeneration
}

// describeConditions writes the conditions as an indented table.
func describeConditions(w io.Writer, conds []messages.Condition, now time.Time) error {
	if len(conds) == 0 {
		_, err := fmt.Fprintln(w, "Conditions:  "+none)
		return err
	}
	fmt.Fprintln(w, "Conditions:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
	for _, c := range conds {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, orNone(c.Reason), age(c.LastTransitionTime, now), c.Message)
	}
	return tw.Flush()
}

// activeTaskText renders the VM's task in progress, with its details when
// they could be read.
func activeTaskText(id string, t *messages.Task, now time.Time) string {
	if id == "" {
		return none
	}
	if t == nil {
		return id
	}
	s := fmt.Sprintf("%s %s %s", t.ID, t.Kind, t.State)
	if t.Progress > 0 {
		s += " " + strconv.Itoa(t.Progress) + "%"
	}
	s += ", started " + age(t.CreatedAt, now) + " ago"
	if t.Message != "" {
		s += ": " + t.Message
	}
	if t.Error != nil {
		s += " (last error: " + taskErrorText(t.Error) + ")"
	}
	return s
}

// when renders a timestamp with its age.
func when(t, now time.Time) string {
	if t.IsZero() {
		return none
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), age(t, now))
}

func userDataSize(ud string) string {
	if ud == "" {
		return none
	}
	return fmt.Sprintf("%d bytes", len(ud))
}

// networks renders NICs as "net1 (10.0.0.5), net2".
func networks(nics []messages.NICSpec) string {
	if len(nics) == 0 {
		return none
	}
	parts := make([]string, 0, len(nics))
	for _, n := range nics {
		if n.IP != "" {
			parts = append(parts, n.Network+" ("+n.IP+")")
		} else {
			parts = append(parts, n.Network)
		}
	}
	return strings.Join(parts, ", ")
}
