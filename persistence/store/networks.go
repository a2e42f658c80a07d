package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Networks is the resource name of networks.
const Networks = "networks"

// Keys of the address plan. Every allocated address is a guard key
// uniq/ipam/<network id>/<ip> holding the VM id, so two VMs can never hold
// one address; every NIC MAC is uniq/nics/mac/<mac>. The ipam keys of a
// network are also its attachment set: a network with any is in use.
const (
	ipamResource = "ipam"
	nicsResource = "nics"
)

// ipamPrefix ranges over one network's allocated addresses.
func ipamPrefix(networkID string) string { return UniqKey(ipamResource, networkID, "") }

// vniPrefix ranges over the allocated VNIs.
func vniPrefix() string { return UniqKey(Networks, "vni", "") }

// maxAllocAttempts bounds the optimistic retries of one allocation. Each
// round re-reads what is taken; with the spread below, 50 concurrent
// creates on one network settle in a handful of rounds.
const maxAllocAttempts = 64

// errRace marks a guard that lost to a concurrent writer on a value this
// store chose itself (the next free address or VNI, the overlap check): the
// allocation is simply tried again with fresh reads. It never leaves the
// package.
var errRace = errors.New("store: allocation raced")

// errContended answers when allocation kept losing races.
var errContended = messages.Errorf(messages.KindUnavailable, "allocation_contended",
	"too many concurrent allocations on the network; retry")

// CreateNetwork commits a new network with its name guard and, for an overlay
// network, the lowest free VNI of the range. One transaction also guards
// that no network was created since the overlap check read them all, so two
// concurrent overlapping creates cannot both succeed.
func (s *Store) CreateNetwork(ctx context.Context, n *messages.Network, vnis messages.VNIRange) error {
	p := n.Prefix()
	for range maxAllocAttempts {
		resp, err := s.cli.Get(ctx, RowPrefix(Networks), clientv3.WithPrefix())
		if err != nil {
			return unavailable(err)
		}
		for _, kv := range resp.Kvs {
			other, err := decode[messages.Network](kv.Value, kv.ModRevision)
			if err != nil {
				return err
			}
			if other.Prefix().Overlaps(p) {
				return messages.ErrNetworkOverlap.WithDetail("network", other.Name).WithDetail("cidr", other.CIDR)
			}
		}
		t := NewTxn()
		if n.Type == messages.NetworkOverlay {
			vni, err := s.freeVNI(ctx, vnis)
			if err != nil {
				return err
			}
			n.VNI = vni
			t.ClaimUniqueOr(Networks, "vni", strconv.Itoa(vni), n.ID, errRace)
		}
		t.Create(Networks, n)
		t.ClaimUnique(Networks, "name", n.Name, n.ID)
		t.RequireNoneCreatedUnder(RowPrefix(Networks), resp.Header.Revision, errRace)
		err = s.Commit(ctx, t)
		if errors.Is(err, errRace) {
			continue
		}
		return err
	}
	return errContended
}

// freeVNI is the lowest VNI of the range no network holds.
func (s *Store) freeVNI(ctx context.Context, r messages.VNIRange) (int, error) {
	resp, err := s.cli.Get(ctx, vniPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, unavailable(err)
	}
	taken := make(map[int]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if v, err := strconv.Atoi(lastSegment(string(kv.Key))); err == nil {
			taken[v] = true
		}
	}
	for v := r.Min; v <= r.Max; v++ {
		if !taken[v] {
			return v, nil
		}
	}
	return 0, messages.ErrVNIExhausted
}

// GetNetwork loads a network by id.
func (s *Store) GetNetwork(ctx context.Context, id string) (*messages.Network, error) {
	return Get[messages.Network](ctx, s, Networks, id)
}

// GetNetworkByName loads a network by name.
func (s *Store) GetNetworkByName(ctx context.Context, name string) (*messages.Network, error) {
	id, err := s.LookupUnique(ctx, Networks, "name", name)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("network", name)
	}
	if err != nil {
		return nil, err
	}
	n, err := s.GetNetwork(ctx, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("network", name)
	}
	return n, err
}

// ListNetworks lists networks in creation order.
func (s *Store) ListNetworks(ctx context.Context, p Page) ([]*messages.Network, string, error) {
	return List[messages.Network](ctx, s, Networks, p)
}

// NetworkAttachments counts the NICs attached to a network.
func (s *Store) NetworkAttachments(ctx context.Context, networkID string) (int64, error) {
	resp, err := s.cli.Get(ctx, ipamPrefix(networkID), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, unavailable(err)
	}
	return resp.Count, nil
}

// NetworkPatch is a change to an existing network; a nil field stays as it
// is. Only egress can change: the CIDR, type, VNI and MTU are baked into the
// addresses, taps and tunnels of the VMs attached to the network, while
// egress is one nftables rule each node reconciles on its next heartbeat.
type NetworkPatch struct {
	Egress *bool
	// Revision, when not 0, is the revision the change is based on (the
	// request's If-Match): a network at any other one is revision_conflict.
	Revision int64
}

// Apply sets the patch's fields on n and reports whether anything changed.
func (p NetworkPatch) Apply(n *messages.Network) bool {
	changed := false
	if p.Egress != nil && *p.Egress != n.Egress {
		n.Egress, changed = *p.Egress, true
	}
	return changed
}

// UpdateNetwork rewrites a network's row in one transaction guarded by the
// mod revision it was read at (n.Revision): a concurrent change or delete
// refuses it (revision_conflict, not_found). The name and VNI guards stay:
// neither changes. On success n carries the new revision.
func (s *Store) UpdateNetwork(ctx context.Context, n *messages.Network) error {
	return s.Commit(ctx, NewTxn().Update(Networks, n))
}

// DeleteNetwork removes a network, its name and VNI guards, in a transaction
// that is refused (network_in_use) while any address of it is allocated:
// the check and the delete are one compare-and-set, so a VM created
// concurrently either lands first (and the delete is refused) or finds the
// network gone.
func (s *Store) DeleteNetwork(ctx context.Context, n *messages.Network) error {
	t := NewTxn()
	inUse := messages.ErrNetworkInUse.WithDetail("network", n.Name)
	inUse.Message = fmt.Sprintf("vms are attached to network %s; delete them first", n.Name)
	t.RequireNoneCreatedUnder(ipamPrefix(n.ID), 0, inUse)
	t.Delete(Networks, n)
	t.ReleaseUnique(Networks, "name", n.Name)
	if n.VNI != 0 {
		t.ReleaseUnique(Networks, "vni", strconv.Itoa(n.VNI))
	}
	return s.Commit(ctx, t)
}

// CreateVMWithNICs commits a new VM with an address and a MAC for each NIC
// its spec asks for, in one transaction with the VM row, its guards and
// whatever extra adds (its task and job). A static address is checked
// against the network and must be free (ip_in_use); otherwise the NIC gets
// a free address, the lowest at first and a random one of the lowest few
// after a lost race. Each network row must still be at the revision read,
// so a network deleted meanwhile refuses the VM, and one updated meanwhile
// (egress) makes the allocation start over from fresh reads.
// vm.Status.NICs and Addresses are filled in.
func (s *Store) CreateVMWithNICs(ctx context.Context, vm *messages.VM, extra func(*Txn)) error {
	for attempt := range maxAllocAttempts {
		nets, err := s.resolveNICNetworks(ctx, vm.Spec.Networks)
		if err != nil {
			return err
		}
		nics := make([]messages.NICStatus, len(nets))
		statics := make([]bool, len(nets))
		for i, n := range nets {
			field := fmt.Sprintf("spec.networks[%d].ip", i)
			taken, err := s.allocated(ctx, n.ID)
			if err != nil {
				return err
			}
			var ip netip.Addr
			if want := vm.Spec.Networks[i].IP; want != "" {
				statics[i] = true
				if ip, err = messages.ValidateStaticIP(field, n, want); err != nil {
					return err
				}
				if taken[ip] {
					return ipInUse(n, ip)
				}
			} else if ip, err = pickFree(n, taken, attempt); err != nil {
				return err
			}
			nics[i] = messages.NICStatus{Network: n.Name, NetworkID: n.ID, IP: ip.String(),
				PrefixLen: n.Prefix().Bits(), MAC: messages.NICMAC(vm.ID, i), MTU: n.MTU}
		}
		vm.Status.NICs = nics
		vm.Status.Addresses = messages.NICAddresses(nics)
		t := NewTxn()
		CreateVM(t, vm)
		for i, nic := range nics {
			n := nets[i]
			// A network deleted meanwhile is not_found (explain reports a
			// missing row as such); one changed in place (egress) leaves
			// the address plan as read, so the allocation is retried.
			t.RequireUnchanged(Networks, n.ID, n.Revision, errRace)
			fail := errRace
			if statics[i] {
				fail = ipInUse(n, netip.MustParseAddr(nic.IP))
			}
			t.ClaimUniqueOr(ipamResource, n.ID, nic.IP, vm.ID, fail)
			t.ClaimUniqueOr(nicsResource, "mac", nic.MAC, vm.ID,
				messages.Errorf(messages.KindConflict, "mac_conflict", "mac %s is in use", nic.MAC))
		}
		if extra != nil {
			extra(t)
		}
		err = s.Commit(ctx, t)
		if errors.Is(err, errRace) {
			continue
		}
		return err
	}
	return errContended
}

func ipInUse(n *messages.Network, ip netip.Addr) error {
	e := messages.ErrIPInUse.WithDetail("network", n.Name).WithDetail("ip", ip.String())
	e.Message = fmt.Sprintf("address %s of network %s is in use", ip, n.Name)
	return e
}

// resolveNICNetworks loads the network of each NIC; a missing one is an
// invalid request (the VM asked for something that does not exist).
func (s *Store) resolveNICNetworks(ctx context.Context, specs []messages.NICSpec) ([]*messages.Network, error) {
	out := make([]*messages.Network, 0, len(specs))
	for i, nic := range specs {
		n, err := s.GetNetworkByName(ctx, nic.Network)
		if messages.KindOf(err) == messages.KindNotFound {
			return nil, messages.Invalid(fmt.Sprintf("spec.networks[%d].network", i), "network %q does not exist", nic.Network)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// allocated reads the addresses of a network that are taken.
func (s *Store) allocated(ctx context.Context, networkID string) (map[netip.Addr]bool, error) {
	resp, err := s.cli.Get(ctx, ipamPrefix(networkID), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, unavailable(err)
	}
	taken := make(map[netip.Addr]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if a, err := netip.ParseAddr(lastSegment(string(kv.Key))); err == nil {
			taken[a] = true
		}
	}
	return taken, nil
}

// pickFree chooses a free host address of n (see pickHost).
func pickFree(n *messages.Network, taken map[netip.Addr]bool, attempt int) (netip.Addr, error) {
	found, ok := pickHost(n.Prefix(), taken, attempt)
	if !ok {
		e := messages.ErrNetworkExhausted.WithDetail("network", n.Name).WithDetail("cidr", n.CIDR)
		e.Message = fmt.Sprintf("network %s (%s) has no free address", n.Name, n.CIDR)
		return netip.Addr{}, e
	}
	return found, nil
}
