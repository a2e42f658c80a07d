package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// applyPlan is what apply does to one VM to make it match its manifest.
type applyPlan struct {
	// create: the VM does not exist yet.
	create bool
	// patch holds the spec fields to change (nil: none), changes describes
	// them for the user ("cpus 1→2").
	patch   *messages.VMSpecPatch
	changes []string
	// power is the power state to reach with a start or stop task ("": as
	// it is).
	power string
}

// noop reports whether the VM already matches its manifest.
func (p applyPlan) noop() bool { return !p.create && p.patch == nil && p.power == "" }

// planVM compares a manifest's spec with the VM as it is (nil when it does
// not exist) and returns what to do. The manifest is the whole desired
// state: a field it leaves out means the server's default, as at creation.
// Fields a VM cannot change once created are refused, not silently kept.
func planVM(want messages.VMSpec, have *messages.VM) (applyPlan, error) {
	if have == nil {
		return applyPlan{create: true}, nil
	}
	want.Defaults()
	if err := want.Validate(); err != nil {
		return applyPlan{}, err
	}
	cur := have.Spec
	cur.Defaults()
	var immutable []string
	if want.Image != cur.Image {
		immutable = append(immutable, "spec.image")
	}
	if want.Arch != cur.Arch {
		immutable = append(immutable, "spec.arch")
	}
	if want.Node != cur.Node {
		immutable = append(immutable, "spec.node")
	}
	if !sameNetworks(want.Networks, cur.Networks) {
		immutable = append(immutable, "spec.networks")
	}
	if len(immutable) > 0 {
		return applyPlan{}, fmt.Errorf("%s cannot change on an existing VM (delete and re-create it to change %s)",
			strings.Join(immutable, ", "), plural(len(immutable), "it", "them"))
	}
	if want.DiskGiB < cur.DiskGiB {
		return applyPlan{}, fmt.Errorf("spec.disk_gib: a disk only grows; the VM has %s, the manifest asks %s", gib(cur.DiskGiB), gib(want.DiskGiB))
	}
	var p applyPlan
	var patch messages.VMSpecPatch
	changed := false
	if want.CPUs != cur.CPUs {
		patch.CPUs, changed = &want.CPUs, true
		p.changes = append(p.changes, fmt.Sprintf("cpus %d→%d", cur.CPUs, want.CPUs))
	}
	if want.MemoryMiB != cur.MemoryMiB {
		patch.MemoryMiB, changed = &want.MemoryMiB, true
		p.changes = append(p.changes, fmt.Sprintf("memory %s→%s", mib(cur.MemoryMiB), mib(want.MemoryMiB)))
	}
	if want.DiskGiB != cur.DiskGiB {
		patch.DiskGiB, changed = &want.DiskGiB, true
		p.changes = append(p.changes, fmt.Sprintf("disk %s→%s", gib(cur.DiskGiB), gib(want.DiskGiB)))
	}
	if want.UserData != cur.UserData {
		patch.UserData, changed = &want.UserData, true
		p.changes = append(p.changes, "user_data")
	}
	if changed {
		p.patch = &patch
	}
	if want.PowerState != cur.PowerState {
		p.power = want.PowerState
		p.changes = append(p.changes, "power "+cur.PowerState+"→"+want.PowerState)
	}
	return p, nil
}

// sameNetworks compares NIC lists, an empty list and none alike.
func sameNetworks(a, b []messages.NICSpec) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// applied is how -o json|yaml reports one resource of an apply: what was
// done and the API's answers.
type applied struct {
	Resource string   `json:"resource"`
	Action   string   `json:"action"` // created, configured, unchanged, failed
	Changes  []string `json:"changes,omitempty"`
	// RestartPending: the running VM picks the changes up when it restarts.
	RestartPending bool                  `json:"restart_pending,omitempty"`
	VM             *messages.VM          `json:"vm,omitempty"`
	Network        *messages.Network     `json:"network,omitempty"`
	Pool           *messages.StoragePool `json:"pool,omitempty"`
	Volume         *messages.Volume      `json:"volume,omitempty"`
	Task           *messages.Task        `json:"task,omitempty"`
	Error          *appliedErrorBody     `json:"error,omitempty"`
	// DryRun: nothing was done; Action is what would have been.
	DryRun bool `json:"dry_run,omitempty"`
}

type appliedErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (a *app) applyCommand() *cobra.Command {
	var files []string
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make resources match manifest files: create what is missing, change what differs",
		Long: `Make the resources in manifest files exist as they are written. A VM that does
not exist is created. For one that exists, the fields that differ are changed
in place (cpus, memory_mib, disk_gib, which only grows, and user_data) and it
is started or stopped when power_state differs; a VM that already matches is
left alone, so applying the same files twice changes nothing the second time.
A field that cannot change on an existing VM (image, arch, node, networks) is
an error for that VM: delete and re-create it. A network is created when
missing and left alone when it matches; a differing egress is changed in
place (its VMs keep running), while a network whose cidr, type or mtu
differs is an error: delete and re-create it. A network manifest without
egress means egress false, as at creation.

Each resource is reported as created, configured or unchanged; one that fails
is reported and the rest still go, and the exit status is 1 if any failed.
-o json|yaml prints {"items":[{"resource","action","changes","vm","network","task"}]}.

` + manifestHelp,
		Example: `  otherix apply -f fleet.yaml --wait
  otherix apply -f fleet.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := w.check(); err != nil {
				return err
			}
			if len(files) == 0 {
				return usageError(errors.New("-f FILE is required"))
			}
			res, err := loadManifests(files, cmd.InOrStdin(), true)
			if err != nil {
				return err
			}
			return a.apply(cmd.Context(), res, w)
		},
	}
	addManifestFlags(cmd, &files, &w)
	a.addDryRunFlag(cmd.Flags())
	return cmd
}

// apply brings each resource in line with its manifest, then waits for the
// tasks if asked to.
func (a *app) apply(ctx context.Context, res []resource, w waitFlags) error {
	if err := a.startDryRun(ctx, w); err != nil {
		return err
	}
	var outs []*outcome
	var reports []applied
	var stop error
	for _, r := range res {
		o := &outcome{res: r}
		outs = append(outs, o)
		rep := applied{Resource: r.ref()}
		if stop != nil {
			o.err = codedf("not_sent", "not sent: %s", errorLine(stop))
		} else if r.kind == kindNetwork {
			rep, o.err = a.applyNetwork(ctx, r)
		} else if a.dryRun && (r.kind == kindStoragePool || r.kind == kindVolume) {
			o.err = dryRunUnsupported(r)
		} else if r.kind == kindStoragePool {
			rep, o.err = a.applyPool(ctx, r)
		} else if r.kind == kindVolume {
			rep, o.err = a.applyVolume(ctx, r)
		} else {
			rep, o.acc, o.err = a.applyVM(ctx, r)
		}
		if o.err != nil {
			fmt.Fprintf(a.stderr, "%s: %s\n", r.ref(), errorLine(o.err))
			rep.Action = "failed"
			rep.Error = &appliedErrorBody{Code: errorCode(o.err), Message: o.err.Error()}
			var ce *cliError
			if client.ErrorCode(o.err) == "" && !errors.As(o.err, &ce) {
				stop = o.err // a transport failure would only repeat
			}
		}
		rep.DryRun = a.dryRun
		reports = append(reports, rep)
		if a.tabular() && o.err == nil {
			detail := strings.Join(rep.Changes, ", ")
			if rep.Task != nil {
				detail = strings.TrimPrefix(detail+"; task "+rep.Task.ID, "; ")
			}
			line := r.ref() + " " + rep.Action
			if a.dryRun && rep.Action != "unchanged" {
				line = r.ref() + " would be " + rep.Action
			}
			if detail != "" {
				line += " (" + detail + ")"
			}
			if a.dryRun {
				line += " (dry run)"
			}
			fmt.Fprintln(a.stdout, line)
		}
	}
	if !a.tabular() {
		if err := a.emit(newItemList(reports), nil); err != nil {
			return err
		}
	}
	if w.wait {
		a.waitAll(ctx, outs, w)
	}
	return summarize(outs)
}

// applyVM makes one VM match its manifest.
func (a *app) applyVM(ctx context.Context, r resource) (applied, *client.Accepted, error) {
	rep := applied{Resource: r.ref()}
	var have *messages.VM
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		have, err = c.GetVM(ctx, r.name)
		return err
	})
	switch {
	case client.ErrorCode(err) == messages.ErrNotFound.Code:
		have = nil
	case err != nil:
		return rep, nil, err
	}
	p, err := planVM(r.spec, have)
	if err != nil {
		return rep, nil, planError(err)
	}
	rep.Changes = p.changes
	if a.dryRun {
		return a.dryRunApplyVM(ctx, r, have, p, rep)
	}
	if p.create {
		var acc *client.Accepted
		err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
			acc, err = c.CreateVM(ctx, messages.CreateVMRequest{Name: r.name, Spec: r.spec}, opt)
			return err
		})
		if err != nil {
			return rep, nil, err
		}
		rep.Action, rep.VM, rep.Task = "created", acc.VM, acc.Task
		return rep, acc, nil
	}
	rep.Action, rep.VM = "unchanged", have
	if p.noop() {
		return rep, nil, nil
	}
	rep.Action = "configured"
	// All or nothing: refuse before any write what would stop the power
	// change after the spec had changed.
	if p.power != "" && have.Status.ActiveTask != "" {
		return rep, nil, &client.APIError{Status: 409, Code: "vm_busy",
			Message: fmt.Sprintf("%s is busy with task %s; nothing was changed (apply again once it ends)", r.ref(), have.Status.ActiveTask)}
	}
	if p.patch != nil {
		// Based on the revision read: a VM changed meanwhile is refused
		// (revision_conflict) rather than overwritten blindly.
		var vm *messages.VM
		err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
			vm, err = c.UpdateVM(ctx, have.ID, messages.UpdateVMRequest{Spec: *p.patch}, opt, client.WithIfMatch(have.Revision))
			return err
		})
		if err != nil {
			return rep, nil, err
		}
		rep.VM = vm
		live := have.Status.Phase == messages.PhaseRunning || have.Status.Phase == messages.PhasePaused
		if live && p.power != messages.PowerStopped && needsRestart(*p.patch) {
			rep.RestartPending = true
			rep.Changes = append(rep.Changes, "restart pending: the running VM picks this up when it restarts (otherix vm reboot "+r.name+")")
		}
	}
	if p.power == "" {
		return rep, nil, nil
	}
	power := (*client.Client).StartVM
	if p.power == messages.PowerStopped {
		power = (*client.Client).StopVM
	}
	var acc *client.Accepted
	err = a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
		acc, err = power(c, ctx, have.ID, opt)
		return err
	})
	if err != nil {
		return rep, nil, a.revertPatch(ctx, r, have, p.patch, rep.VM, err)
	}
	if acc.VM != nil {
		rep.VM = acc.VM
	}
	rep.Task = acc.Task
	return rep, acc, nil
}

// needsRestart reports whether a patch changes what a running QEMU was
// started with (user data is read by the guest at boot as well).
func needsRestart(p messages.VMSpecPatch) bool {
	return p.CPUs != nil || p.MemoryMiB != nil || p.DiskGiB != nil || p.UserData != nil
}

// revertPatch undoes a spec change whose power change was then refused, so
// that apply changes a VM all or not at all. It answers the error to report:
// the refusal, saying whether the spec was put back.
func (a *app) revertPatch(ctx context.Context, r resource, have *messages.VM, patch *messages.VMSpecPatch, patched *messages.VM, cause error) error {
	if patch == nil || patched == nil {
		return cause
	}
	old := have.Spec
	var back messages.VMSpecPatch
	if patch.CPUs != nil {
		back.CPUs = &old.CPUs
	}
	if patch.MemoryMiB != nil {
		back.MemoryMiB = &old.MemoryMiB
	}
	if patch.DiskGiB != nil {
		back.DiskGiB = &old.DiskGiB
	}
	if patch.UserData != nil {
		back.UserData = &old.UserData
	}
	err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) error {
		_, err := c.UpdateVM(ctx, have.ID, messages.UpdateVMRequest{Spec: back}, opt, client.WithIfMatch(patched.Revision))
		return err
	})
	var api *client.APIError
	msg := errorLine(cause)
	if errors.As(cause, &api) {
		msg = api.Message
	}
	if err != nil {
		return codedf(codePartial, "%s: the spec was changed but the power change failed (%s), and putting the spec back failed too: %s",
			r.ref(), msg, errorLine(err))
	}
	if api != nil {
		e := *api
		e.Message = msg + "; the spec change was undone, nothing was changed"
		return &e
	}
	return codedf(errorCode(cause), "%s; the spec change was undone, nothing was changed", msg)
}

// planError gives a refused plan a code: a domain validation error keeps
// its own, anything else is invalid_manifest.
func planError(err error) error {
	var me *messages.Error
	if errors.As(err, &me) {
		return &cliError{code: me.Code, msg: me.Message}
	}
	return &cliError{code: codeManifest, msg: err.Error()}
}

// applyNetwork creates a missing network, or makes an existing one match
// its manifest: egress changes in place, anything else that differs is
// refused (a network's address plan and MTU are fixed at creation).
func (a *app) applyNetwork(ctx context.Context, r resource) (applied, error) {
	rep := applied{Resource: r.ref()}
	var have *messages.Network
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		have, err = c.GetNetwork(ctx, r.name)
		return err
	})
	switch {
	case client.ErrorCode(err) == messages.ErrNotFound.Code:
		var n *messages.Network
		err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
			if a.dryRun {
				var d *messages.DryRunResult
				d, err = c.DryRunCreateNetwork(ctx, r.network)
				if err == nil {
					n = d.Network
				}
				return err
			}
			n, err = c.CreateNetwork(ctx, r.network, opt)
			return err
		})
		if err != nil {
			return rep, err
		}
		rep.Action, rep.Network = "created", n
		return rep, nil
	case err != nil:
		return rep, err
	}
	if diff := networkDiff(r.network, have); len(diff) > 0 {
		return rep, planError(fmt.Errorf("%s cannot change on an existing network (delete and re-create it)", strings.Join(diff, ", ")))
	}
	n, changes, err := a.updateNetworkEgress(ctx, have, r.network.Egress)
	if err != nil {
		return rep, err
	}
	rep.Action, rep.Network, rep.Changes = "unchanged", n, changes
	if len(changes) > 0 {
		rep.Action = "configured"
	}
	return rep, nil
}

// networkDiff names the fields that cannot change in place where a
// manifest asks something else than the network has; the MTU, when the
// manifest leaves it out, takes the server's value. Egress is not among
// them: it changes in place.
func networkDiff(want messages.CreateNetworkRequest, have *messages.Network) []string {
	var diff []string
	if p, err := netip.ParsePrefix(want.CIDR); err != nil || p.String() != have.CIDR {
		diff = append(diff, fmt.Sprintf("spec.cidr (%s→%s)", have.CIDR, want.CIDR))
	}
	typ := want.Type
	if typ == "" {
		typ = messages.NetworkOverlay
	}
	if typ != have.Type {
		diff = append(diff, fmt.Sprintf("spec.type (%s→%s)", have.Type, typ))
	}
	if want.MTU != 0 && want.MTU != have.MTU {
		diff = append(diff, fmt.Sprintf("spec.mtu (%d→%d)", have.MTU, want.MTU))
	}
	return diff
}
