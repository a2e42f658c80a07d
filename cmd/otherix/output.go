package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// none fills a table cell that has no value, as kubectl does.
const none = "<none>"

// itemList is how -o json|yaml prints a list: the API's list shape without
// next_cursor, because the CLI has already followed every page.
type itemList[T any] struct {
	Items []T `json:"items"`
}

// newItemList wraps items, keeping an empty list "[]" rather than null.
func newItemList[T any](items []T) itemList[T] {
	if items == nil {
		items = []T{}
	}
	return itemList[T]{Items: items}
}

// emit prints v as JSON or YAML when -o asks for it, and otherwise the rows
// that table builds (the header first) for -o table|wide.
func (a *app) emit(v any, table func(wide bool) [][]string) error {
	switch a.output {
	case outputJSON:
		return writeJSON(a.stdout, v)
	case outputYAML:
		return writeYAML(a.stdout, v)
	}
	return writeTable(a.stdout, table(a.output == outputWide))
}

// writeJSON prints v indented. The SDK decodes into the messages types whose
// tags are the wire format, so re-encoding gives back what the API sent.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeYAML prints v as YAML with the JSON field names (through JSON, as
// sigs.k8s.io/yaml does), so both formats name fields alike.
func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode yaml: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// writeTable aligns rows in columns three spaces apart.
func writeTable(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// vmRows is the table of VMs; wide adds PID, ADDRESSES, ARCH, ID, IMAGE,
// GENERATION and TASK.
func vmRows(vms []*messages.VM, wide bool, now time.Time) [][]string {
	return vmRowsWithOwners(vms, wide, now, nil)
}

// vmRowsWithOwners is vmRows whose wide form names each VM's owner by
// email where owners knows it (by user id), else by id.
func vmRowsWithOwners(vms []*messages.VM, wide bool, now time.Time, owners map[string]string) [][]string {
	head := []string{"NAME", "PHASE", "POWER", "CPUS", "MEMORY", "DISK", "NODE", "AGE"}
	if wide {
		head = append(head, "OWNER", "PID", "ADDRESSES", "ARCH", "ID", "IMAGE", "GENERATION", "TASK")
	}
	rows := [][]string{head}
	for _, vm := range vms {
		r := []string{vm.Name, orNone(vm.Status.Phase), orNone(vm.Spec.PowerState), strconv.Itoa(vm.Spec.CPUs),
			mib(vm.Spec.MemoryMiB), gib(vm.Spec.DiskGiB), orNone(vm.Status.Node), age(vm.CreatedAt, now)}
		if wide {
			pid := none
			if vm.Status.Pid > 0 {
				pid = strconv.Itoa(vm.Status.Pid)
			}
			owner := orNone(vm.Owner)
			if email := owners[vm.Owner]; email != "" {
				owner = email
			}
			r = append(r, owner, pid, orNone(strings.Join(vm.Status.Addresses, ",")), orNone(vm.Spec.Arch),
				vm.ID, orNone(vm.Spec.Image.URL), strconv.FormatInt(vm.Generation, 10), orNone(vm.Status.ActiveTask))
		}
		rows = append(rows, r)
	}
	return rows
}

// taskRows is the table of tasks; wide adds the message and the error.
func taskRows(tasks []*messages.Task, wide bool, now time.Time) [][]string {
	head := []string{"TASK", "KIND", "STATE", "VM", "PROGRESS", "AGE"}
	if wide {
		head = append(head, "MESSAGE", "ERROR")
	}
	rows := [][]string{head}
	for _, t := range tasks {
		r := []string{t.ID, t.Kind, t.State, targetName(t.Target), strconv.Itoa(t.Progress) + "%", age(t.CreatedAt, now)}
		if wide {
			r = append(r, orNone(t.Message), orNone(taskErrorText(t.Error)))
		}
		rows = append(rows, r)
	}
	return rows
}

// acceptedRows is the table of accepted writes: which task does the work.
func acceptedRows(accs []*client.Accepted) [][]string {
	rows := [][]string{{"TASK", "KIND", "STATE", "VM"}}
	for _, acc := range accs {
		t := acc.Task
		if t == nil {
			continue
		}
		name := targetName(t.Target)
		if acc.VM != nil && acc.VM.Name != "" {
			name = acc.VM.Name
		}
		rows = append(rows, []string{t.ID, t.Kind, t.State, name})
	}
	return rows
}

// targetName names a task's resource, by name when it has one.
func targetName(t messages.Target) string {
	if t.Name != "" {
		return t.Name
	}
	return orNone(t.ID)
}

// taskErrorText renders a task error as "message [code]".
func taskErrorText(e *messages.TaskError) string {
	if e == nil {
		return ""
	}
	return fmt.Sprintf("%s [%s]", e.Message, e.Code)
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// mib renders a memory size, in GiB when it is a whole number of them.
func mib(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return strconv.Itoa(n/1024) + "GiB"
	}
	return strconv.Itoa(n) + "MiB"
}

func gib(n int) string { return strconv.Itoa(n) + "GiB" }

// age renders how long ago t was the way kubectl does: precise while young,
// coarser as it grows, never more than two units.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	d := max(now.Sub(t), 0)
	const day, year = 24 * time.Hour, 365 * 24 * time.Hour
	two := func(big, small time.Duration, bu, su string) string {
		b, s := int(d/big), int(d%big/small)
		if s == 0 {
			return fmt.Sprintf("%d%s", b, bu)
		}
		return fmt.Sprintf("%d%s%d%s", b, bu, s, su)
	}
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < 10*time.Minute:
		return two(time.Minute, time.Second, "m", "s")
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 8*time.Hour:
		return two(time.Hour, time.Minute, "h", "m")
	case d < 2*day:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d < 8*day:
		return two(day, time.Hour, "d", "h")
	case d < 2*year:
		return fmt.Sprintf("%dd", int(d/day))
	}
	return fmt.Sprintf("%dy", int(d/year))
}

// ownerEmails maps the owners of vms to their emails, as far as the caller
// may read users: the caller's own account always, other users' for an admin.
// It is best effort: a table shows an id where it cannot name the owner.
func (a *app) ownerEmails(ctx context.Context, vms []*messages.VM) map[string]string {
	emails := map[string]string{}
	_ = a.call(ctx, func(ctx context.Context, c *client.Client) error {
		me, err := c.Me(ctx)
		if err != nil {
			return err
		}
		emails[me.ID] = me.Email
		for _, vm := range vms {
			if _, ok := emails[vm.Owner]; ok || vm.Owner == "" {
				continue
			}
			u, err := c.GetUser(ctx, vm.Owner)
			if err != nil {
				// Not allowed to read users (or the owner is gone): the
				// rest would only fail the same way.
				emails[vm.Owner] = ""
				if code := client.ErrorCode(err); code != messages.ErrNotFound.Code {
					return nil
				}
				continue
			}
			emails[vm.Owner] = u.Email
		}
		return nil
	})
	return emails
}
