package store

import (
	"context"

	"github.com/otherix/otherix/messages"
)

// VMOwnerIndex is the index sort key that lists one owner's VMs.
func VMOwnerIndex(owner string) string { return "owner/" + owner }

// vmNameValue scopes a VM name to its owner: names are unique per owner.
func vmNameValue(owner, name string) string { return owner + "/" + name }

// CreateVM adds a new VM to t with its name guard and owner index.
func CreateVM(t *Txn, vm *messages.VM) *Txn {
	t.Create(VMs, vm)
	t.ClaimUnique(VMs, "name", vmNameValue(vm.Owner, vm.Name), vm.ID)
	t.AddIndex(VMs, VMOwnerIndex(vm.Owner), vm.ID)
	t.AddIndex(VMs, vmNameIndex(vm.Name), vm.ID)
	return t
}

// DeleteVM adds the removal of a VM, its name guard, its index keys and its
// NICs' address and MAC guards to t: a deleted VM's addresses are free again.
func DeleteVM(t *Txn, vm *messages.VM) *Txn {
	t.Delete(VMs, vm)
	for _, nic := range vm.Status.NICs {
		t.ReleaseUnique(ipamResource, nic.NetworkID, nic.IP)
		t.ReleaseUnique(nicsResource, "mac", nic.MAC)
	}
	t.ReleaseUnique(VMs, "name", vmNameValue(vm.Owner, vm.Name))
	t.RemoveIndex(VMs, VMOwnerIndex(vm.Owner), vm.ID)
	t.RemoveIndex(VMs, vmNameIndex(vm.Name), vm.ID)
	return t
}

// GetVM loads a VM by id.
func (s *Store) GetVM(ctx context.Context, id string) (*messages.VM, error) {
	return Get[messages.VM](ctx, s, VMs, id)
}

// VMIDByName resolves an owner's VM name to its id.
func (s *Store) VMIDByName(ctx context.Context, owner, name string) (string, error) {
	id, err := s.LookupUnique(ctx, VMs, "name", vmNameValue(owner, name))
	if messages.KindOf(err) == messages.KindNotFound {
		return "", messages.NotFound("vm", name)
	}
	if err != nil {
		return "", err
	}
	return id, nil
}

// ListVMs lists every VM, or one owner's when owner is set.
func (s *Store) ListVMs(ctx context.Context, owner string, p Page) ([]*messages.VM, string, error) {
	if owner == "" {
		return List[messages.VM](ctx, s, VMs, p)
	}
	return ListIndexed[messages.VM](ctx, s, VMs, VMOwnerIndex(owner), p)
}
