package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Networks have no actor of their own, on purpose. Only egress changes once
// a network exists, and nothing about it touches a node synchronously:
// creating, updating and deleting one is a single etcd compare-and-set with
// its guards, and the writes that contend on a network are the address
// allocations of many VMs, which happen in each VM actor's create
// transaction. An actor per network would serialize those allocations on
// one mailbox within a replica and would still need the same etcd guards
// across replicas (DESIGN §4: HA correctness comes from compare-and-set,
// never from memory). So the gateway calls the store directly, and etcd
// arbitrates.

// CreateNetwork validates the request against the settings (CIDR, supernet,
// type, MTU) and commits the network with its name guard and VNI.
func (g *Gateway) CreateNetwork(ctx context.Context, req messages.CreateNetworkRequest) (*messages.Network, error) {
	settings, err := g.st.Settings(ctx)
	if errors.Is(err, store.ErrNotSeeded) {
		// Every real cluster seeds the document at first boot; a bare store
		// (tests) uses what it would be seeded with.
		settings, err = messages.DefaultSettings(), nil
	}
	if err != nil {
		return nil, err
	}
	n, err := messages.BuildNetwork(req, settings)
	if err != nil {
		return nil, err
	}
	if err := g.checkNetworkHosts(ctx, n); err != nil {
		return nil, err
	}
	n.ID = messages.NewID()
	n.GatewayMAC = messages.GatewayMAC(n.ID)
	n.CreatedAt = g.st.Now().UTC()
	if err := g.st.CreateNetwork(ctx, n, settings.VNIRange); err != nil {
		return nil, err
	}
	return n, nil
}

// GetNetwork returns a network by name or id.
func (g *Gateway) GetNetwork(ctx context.Context, ref string) (*messages.Network, error) {
	if messages.ValidID(ref) {
		n, err := g.st.GetNetwork(ctx, ref)
		if err == nil || messages.KindOf(err) != messages.KindNotFound {
			return n, err
		}
	}
	if messages.ValidateName("network", ref) != nil {
		return nil, messages.NotFound("network", ref)
	}
	return g.st.GetNetworkByName(ctx, ref)
}

// ListNetworks lists every network in creation order.
func (g *Gateway) ListNetworks(ctx context.Context, page store.Page) ([]*messages.Network, string, error) {
	return g.st.ListNetworks(ctx, page)
}

// maxNetworkUpdateAttempts bounds the re-reads of an update sent without a
// revision when concurrent writers keep moving the row.
const maxNetworkUpdateAttempts = 5

// UpdateNetwork applies patch to a network and commits it guarded by the
// revision it read. A patch that changes nothing writes nothing and answers
// the network as it is. Sent with a revision (If-Match), a network at any
// other is revision_conflict; sent without, a concurrent write makes it
// re-read and apply again, since the patch sets values rather than deriving
// them. The data plane follows by itself: the overlay view re-reads
// networks within seconds and agents reconcile on their next heartbeat.
func (g *Gateway) UpdateNetwork(ctx context.Context, p messages.Principal, ref string, patch store.NetworkPatch) (*messages.Network, error) {
	for attempt := 1; ; attempt++ {
		n, err := g.GetNetwork(ctx, ref)
		if err != nil {
			return nil, err
		}
		if patch.Revision != 0 && patch.Revision != n.Revision {
			e := messages.ErrStaleRevision.WithDetail("current_revision", n.Revision)
			e.Message = fmt.Sprintf("network %s is at revision %d, not %d; reload and retry", n.Name, n.Revision, patch.Revision)
			return nil, e
		}
		next := *n
		if !patch.Apply(&next) {
			return n, nil
		}
		err = g.st.UpdateNetwork(ctx, &next)
		switch {
		case err == nil && store.IsDryRun(ctx):
			return &next, nil
		case err == nil:
			g.id.Audit(messages.AuditEntry{Actor: p.UserID, Action: "network.update", Target: n.Name,
				Result: "ok"})
			return &next, nil
		case messages.KindOf(err) == messages.KindNotFound:
			return nil, messages.NotFound("network", ref)
		case messages.KindOf(err) == messages.KindStale && patch.Revision == 0 && attempt < maxNetworkUpdateAttempts:
			continue
		}
		return nil, err
	}
}

// DeleteNetwork removes a network; refused (network_in_use) while any VM
// has a NIC on it.
func (g *Gateway) DeleteNetwork(ctx context.Context, ref string) error {
	n, err := g.GetNetwork(ctx, ref)
	if err != nil {
		return err
	}
	err = g.st.DeleteNetwork(ctx, n)
	if errors.Is(err, messages.ErrNetworkInUse) {
		if count, cerr := g.st.NetworkAttachments(ctx, n.ID); cerr == nil {
			var e *messages.Error
			if errors.As(err, &e) {
				e = e.WithDetail("attached_nics", count)
				e.Message = fmt.Sprintf("network %s has %d nic(s) attached; delete their vms first", n.Name, count)
				return e
			}
		}
	}
	return err
}
