package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// dryRunHelp is --dry-run's flag help.
const dryRunHelp = "ask the API what would happen, writing nothing: every check of the write runs (authorization, validation, quota, capacity, name and address conflicts)"

// addDryRunFlag adds --dry-run to a command that writes.
func (a *app) addDryRunFlag(f *pflag.FlagSet) {
	f.BoolVar(&a.dryRun, "dry-run", false, dryRunHelp)
}

// startDryRun refuses --dry-run with --wait (there is no task to follow)
// and checks that the control plane takes dry runs: an older one ignores
// ?dry_run=true and would carry the write out, so nothing is sent to it.
func (a *app) startDryRun(ctx context.Context, w waitFlags) error {
	if !a.dryRun {
		return nil
	}
	if w.wait {
		return usageError(errors.New("--dry-run writes nothing, so there is no task to --wait for"))
	}
	return a.call(ctx, func(ctx context.Context, c *client.Client) error { return c.CheckDryRun(ctx) })
}

// dryRunLine is how a table reports a dry run's answer.
func dryRunLine(ref string, r *messages.DryRunResult) string {
	verb := map[string]string{messages.DryRunCreate: "created", messages.DryRunUpdate: "configured",
		messages.DryRunDelete: "deleted", messages.DryRunStart: "started", messages.DryRunStop: "stopped"}[r.Action]
	detail := ""
	switch {
	case r.VM != nil && r.Action == messages.DryRunCreate:
		s := r.VM.Spec
		detail = fmt.Sprintf(" (%d vCPU, %s, %s disk, %s)", s.CPUs, mib(s.MemoryMiB), gib(s.DiskGiB), s.Arch)
	case r.Network != nil && r.Action == messages.DryRunCreate:
		detail = fmt.Sprintf(" (%s, %s, VNI %d)", r.Network.CIDR, r.Network.Type, r.Network.VNI)
	}
	return fmt.Sprintf("%s would be %s%s (dry run)", ref, verb, detail)
}

// dryRunDeleteKind is delete KIND NAME --dry-run, for VMs and networks.
func (a *app) dryRunDeleteKind(ctx context.Context, kind, name string, force bool, w waitFlags) error {
	if kind != kindNameVM && kind != kindNameNetwork {
		return usageError(fmt.Errorf("--dry-run applies to vms and networks, not %ss", kind))
	}
	if err := a.startDryRun(ctx, w); err != nil {
		return err
	}
	var r *messages.DryRunResult
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		if kind == kindNameNetwork {
			r, err = c.DryRunDeleteNetwork(ctx, name)
		} else {
			r, err = c.DryRunDeleteVM(ctx, name, force)
		}
		return err
	})
	if err != nil {
		return err
	}
	return a.emitDryRun(kind+"/"+name, r)
}

// emitDryRun prints one dry run's answer: a line for a table, the answer
// itself for -o json|yaml.
func (a *app) emitDryRun(ref string, r *messages.DryRunResult) error {
	if a.tabular() {
		fmt.Fprintln(a.stdout, dryRunLine(ref, r))
		return nil
	}
	return a.emit(r, nil)
}

// dryRunApplyVM is applyVM under --dry-run: each write the plan would send
// (the create, or the spec change and the power change) is sent as a dry
// run, so the API judges it; the report is what apply would say.
func (a *app) dryRunApplyVM(ctx context.Context, r resource, have *messages.VM, p applyPlan, rep applied) (applied, *client.Accepted, error) {
	var d *messages.DryRunResult
	send := func(fn func(context.Context, *client.Client) (*messages.DryRunResult, error)) error {
		return a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
			d, err = fn(ctx, c)
			return err
		})
	}
	if p.create {
		if err := send(func(ctx context.Context, c *client.Client) (*messages.DryRunResult, error) {
			return c.DryRunCreateVM(ctx, messages.CreateVMRequest{Name: r.name, Spec: r.spec})
		}); err != nil {
			return rep, nil, err
		}
		rep.Action, rep.VM = "created", d.VM
		return rep, nil, nil
	}
	rep.Action, rep.VM = "unchanged", have
	if p.noop() {
		return rep, nil, nil
	}
	rep.Action = "configured"
	if p.power != "" && have.Status.ActiveTask != "" {
		return rep, nil, &client.APIError{Status: 409, Code: "vm_busy",
			Message: fmt.Sprintf("%s is busy with task %s; apply would change nothing now", r.ref(), have.Status.ActiveTask)}
	}
	if p.patch != nil {
		if err := send(func(ctx context.Context, c *client.Client) (*messages.DryRunResult, error) {
			return c.DryRunUpdateVM(ctx, have.ID, messages.UpdateVMRequest{Spec: *p.patch}, client.WithIfMatch(have.Revision))
		}); err != nil {
			return rep, nil, err
		}
		rep.VM = d.VM
	}
	if p.power != "" {
		if err := send(func(ctx context.Context, c *client.Client) (*messages.DryRunResult, error) {
			return c.DryRunPowerVM(ctx, have.ID, p.power)
		}); err != nil {
			return rep, nil, err
		}
		if p.patch == nil {
			rep.VM = d.VM
		} else if d.VM != nil {
			rep.VM.Spec.PowerState = d.VM.Spec.PowerState // rep.VM is the patch's answer, a copy
		}
	}
	return rep, nil, nil
}

// dryRunUnsupported refuses a dry run of a kind whose endpoints do not
// take ?dry_run=true (the API would refuse it with dry_run_unsupported).
func dryRunUnsupported(r resource) error {
	return codedf("dry_run_unsupported", "%s: --dry-run is not supported for this kind yet; nothing was sent", r.ref())
}
