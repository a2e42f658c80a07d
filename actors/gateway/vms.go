package gateway

import (
	"context"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// CreateVM validates the request and has a new VM actor commit the VM with its
// vm.create task and job in one transaction.
func (g *Gateway) CreateVM(ctx context.Context, owner string, req messages.CreateVMRequest) (*messages.VM, *messages.Task, error) {
	if err := messages.ValidateName("name", req.Name); err != nil {
		return nil, nil, err
	}
	spec := req.Spec
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return nil, nil, err
	}
	reply, err := g.askVM(messages.NewID(), messages.CreateVM{Owner: owner, Name: req.Name, Spec: spec})
	if err != nil {
		return nil, nil, err
	}
	return reply.VM, reply.Task, nil
}

// GetVM returns a VM by id or by one of owner's names. A ref shaped like an id
// is tried as an id first and then as a name, since a 26-character name can
// look like one. A VM of another owner is reported as not found, the same as
// one that does not exist.
func (g *Gateway) GetVM(ctx context.Context, owner, ref string) (*messages.VM, error) {
	if messages.ValidID(ref) {
		reply, err := g.askVM(ref, messages.GetVM{})
		if err == nil && visible(owner, reply.VM.Owner) {
			return reply.VM, nil
		}
		if err != nil && messages.KindOf(err) != messages.KindNotFound {
			return nil, err
		}
	}
	if messages.ValidateName("vm", ref) != nil {
		return nil, messages.NotFound("vm", ref)
	}
	id, err := g.st.VMIDByName(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	reply, err := g.askVM(id, messages.GetVM{})
	if err != nil {
		if messages.KindOf(err) == messages.KindNotFound {
			return nil, messages.NotFound("vm", ref)
		}
		return nil, err
	}
	if !visible(owner, reply.VM.Owner) {
		return nil, messages.NotFound("vm", ref)
	}
	return reply.VM, nil
}

// visible reports whether a caller may see a resource owned by owner. Until
// identity exists every caller is the anonymous owner and sees everything.
func visible(caller, owner string) bool {
	return caller == messages.AnonymousOwner || caller == owner
}

// ListVMs lists the caller's VMs.
func (g *Gateway) ListVMs(ctx context.Context, owner string, page store.Page) ([]*messages.VM, string, error) {
	if owner == messages.AnonymousOwner {
		return g.st.ListVMs(ctx, "", page)
	}
	return g.st.ListVMs(ctx, owner, page)
}

// UpdateVM changes a VM's spec through its actor.
func (g *Gateway) UpdateVM(ctx context.Context, owner, ref string, req messages.UpdateVMRequest) (*messages.VM, error) {
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, err
	}
	reply, err := g.askVM(vm.ID, messages.UpdateVM{Patch: req.Spec, Revision: req.Revision})
	if err != nil {
		return nil, err
	}
	return reply.VM, nil
}

// VMTask starts an asynchronous operation (vm.start, vm.stop, vm.delete).
func (g *Gateway) VMTask(ctx context.Context, owner, ref, kind string, force bool) (*messages.VM, *messages.Task, error) {
	vm, err := g.GetVM(ctx, owner, ref)
	if err != nil {
		return nil, nil, err
	}
	reply, err := g.askVM(vm.ID, messages.RequestVMTask{Kind: kind, Force: force})
	if err != nil {
		return nil, nil, err
	}
	return reply.VM, reply.Task, nil
}
