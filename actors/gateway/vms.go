package gateway

import (
	"context"
	"strings"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// CreateVM has a new VM actor validate the request (messages.PrepareVMCreate,
// the check the agent applies too), refuse what no node could ever host, and
// commit the VM with its vm.create task and job and its owner's usage, within
// their quota, in one transaction (under store.DryRun, every check of it
// and no write). owner is the creating user's id and must
// be set: every VM belongs to a user.
func (g *Gateway) CreateVM(ctx context.Context, owner string, req messages.CreateVMRequest) (*messages.VM, *messages.Task, error) {
	if owner == "" {
		return nil, nil, messages.Invalid("owner", "is required")
	}
	reply, err := g.askVM(ctx, messages.NewID(), messages.CreateVM{Owner: owner, Name: req.Name, Spec: req.Spec, DryRun: store.IsDryRun(ctx)})
	if err != nil {
		return nil, nil, err
	}
	return reply.VM, reply.Task, nil
}

// GetVM returns a VM by id or by one of owner's names. A ref shaped like an id
// is tried as an id first and then as a name, since a 26-character name can
// look like one. A VM of another owner is reported as not found, the same as
// one that does not exist, but wraps messages.ErrOutOfScope (ErrOutOfScope)
// so the attempt is audited as a denial. With owner "" (any owner) a name is
// the caller's own VM first (messages.CallerOf), then looked up across
// owners; a name several other owners use is ambiguous_vm_name. OWNER/NAME,
// OWNER being the owner's email, names another owner's VM exactly.
func (g *Gateway) GetVM(ctx context.Context, owner, ref string) (*messages.VM, error) {
	if email, name, ok := strings.Cut(ref, "/"); ok {
		return g.getVMOfOwner(ctx, owner, email, name, ref)
	}
	notFound := messages.NotFound("vm", ref)
	if messages.ValidID(ref) {
		reply, err := g.askVM(ctx, ref, messages.GetVM{})
		if err == nil && visible(owner, reply.VM.Owner) {
			return reply.VM, nil
		}
		if err != nil && messages.KindOf(err) != messages.KindNotFound {
			return nil, err
		}
		if err == nil {
			// Another owner's VM. Still tried as a name below (an own VM
			// may be named like an id), but a miss there is out of scope.
			notFound = messages.OutOfScope("vm", ref)
		}
	}
	if messages.ValidateName("vm", ref) != nil {
		return nil, notFound
	}
	id, err := g.vmIDByName(ctx, owner, ref)
	if messages.KindOf(err) == messages.KindNotFound {
		if notFound.Err == nil && owner != "" {
			// Another owner's name? Asked on every scoped miss, so a
			// missing and a hidden VM cost the same reads.
			others, err := g.st.VMIDsByNameAnyOwner(ctx, ref)
			if err != nil {
				return nil, err
			}
			if len(others) > 0 {
				notFound = messages.OutOfScope("vm", ref)
			}
		}
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	reply, err := g.askVM(ctx, id, messages.GetVM{})
	if err != nil {
		if messages.KindOf(err) == messages.KindNotFound {
			return nil, notFound
		}
		return nil, err
	}
	if !visible(owner, reply.VM.Owner) {
		return nil, messages.OutOfScope("vm", ref)
	}
	return reply.VM, nil
}

// visible reports whether a resource owned by owner is inside scope: ""
// is every owner (admin and operator scope), a user id only that user.
func visible(scope, owner string) bool {
	return scope == "" || scope == owner
}

// vmIDByName resolves a VM name within scope. With every owner in scope the
// caller's own VM of that name comes first: another user creating the same
// name must not break an admin's scripts.
func (g *Gateway) vmIDByName(ctx context.Context, scope, name string) (string, error) {
	if scope != "" {
		return g.st.VMIDByName(ctx, scope, name)
	}
	if caller := messages.CallerOf(ctx); caller != "" {
		id, err := g.st.VMIDByName(ctx, caller, name)
		if err == nil || messages.KindOf(err) != messages.KindNotFound {
			return id, err
		}
	}
	ids, err := g.st.VMIDsByNameAnyOwner(ctx, name)
	if err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		return "", messages.NotFound("vm", name)
	case 1:
		return ids[0], nil
	}
	return "", messages.Errorf(messages.KindConflict, "ambiguous_vm_name",
		"%d vms of other owners are named %q; name one as OWNER_EMAIL/%s or by its id", len(ids), name, name).WithDetail("ids", ids)
}

// getVMOfOwner is GetVM for OWNER/NAME. Outside the caller's scope it is
// not found, like any other VM there; an unknown owner too.
func (g *Gateway) getVMOfOwner(ctx context.Context, scope, email, name, ref string) (*messages.VM, error) {
	if messages.ValidateName("vm", name) != nil || email == "" {
		return nil, messages.NotFound("vm", ref)
	}
	u, err := g.st.UserByEmail(ctx, email)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("vm", ref)
	}
	if err != nil {
		return nil, err
	}
	if !visible(scope, u.ID) {
		return nil, messages.OutOfScope("vm", ref)
	}
	id, err := g.st.VMIDByName(ctx, u.ID, name)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("vm", ref)
	}
	if err != nil {
		return nil, err
	}
	reply, err := g.askVM(ctx, id, messages.GetVM{})
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("vm", ref)
	}
	if err != nil {
		return nil, err
	}
	return reply.VM, nil
}

// ListVMs lists the VMs in scope: owner's, or every VM for "".
func (g *Gateway) ListVMs(ctx context.Context, owner string, page store.Page) ([]*messages.VM, string, error) {
	return g.st.ListVMs(ctx, owner, page)
}

// UpdateVM changes a VM's spec through its actor.
func (g *Gateway) UpdateVM(ctx context.Context, owner, ref string, req messages.UpdateVMRequest) (*messages.VM, error) {
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	reply, err := g.askVM(ctx, vm.ID, messages.UpdateVM{Patch: req.Spec, Revision: req.Revision, DryRun: store.IsDryRun(ctx)})
	if err != nil {
		return nil, err
	}
	return reply.VM, nil
}

// VMTask starts an asynchronous operation (vm.start, vm.stop, vm.poweroff,
// vm.reboot, vm.delete) with only its force option; RunVMTask takes them all.
func (g *Gateway) VMTask(ctx context.Context, owner, ref, kind string, force bool) (*messages.VM, *messages.Task, error) {
	return g.RunVMTask(ctx, owner, ref, messages.RequestVMTask{Kind: kind, Force: force})
}

// RunVMTask starts an asynchronous operation on the VM ref with the
// request's options (force, and the graceful stop or reboot timeout). The
// VM actor validates the kind and the options, and commits the task and its
// job in one transaction.
func (g *Gateway) RunVMTask(ctx context.Context, owner, ref string, req messages.RequestVMTask) (*messages.VM, *messages.Task, error) {
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, nil, err
	}
	req.DryRun = store.IsDryRun(ctx)
	reply, err := g.askVM(ctx, vm.ID, req)
	if err != nil {
		return nil, nil, err
	}
	return reply.VM, reply.Task, nil
}
