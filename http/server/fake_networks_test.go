package server

import (
	"context"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// fakeNetworks is the network side of fakeCP: networks in memory, validated
// by the real messages rules. Overlap, VNIs and IPAM are the store's and are
// tested on real etcd.
type fakeNetworks struct {
	mu   sync.Mutex
	nets map[string]*messages.Network // by name
	// inUse names networks whose delete is refused as network_in_use.
	inUse map[string]bool
}

func newFakeNetworks() *fakeNetworks {
	return &fakeNetworks{nets: map[string]*messages.Network{}, inUse: map[string]bool{}}
}

func (f *fakeNetworks) CreateNetwork(_ context.Context, req messages.CreateNetworkRequest) (*messages.Network, error) {
	n, err := messages.BuildNetwork(req, messages.DefaultSettings())
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nets[n.Name]; ok {
		return nil, messages.NameConflict("networks", "name", n.Name)
	}
	n.ID = messages.NewID()
	n.GatewayMAC = messages.GatewayMAC(n.ID)
	n.CreatedAt = time.Now().UTC()
	n.Revision = 1
	if n.Type == messages.NetworkOverlay {
		n.VNI = 4096 + len(f.nets)
	}
	f.nets[n.Name] = n
	return n, nil
}

func (f *fakeNetworks) GetNetwork(_ context.Context, ref string) (*messages.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.nets[ref]; ok {
		return n, nil
	}
	return nil, messages.NotFound("network", ref)
}

func (f *fakeNetworks) ListNetworks(context.Context, store.Page) ([]*messages.Network, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*messages.Network, 0, len(f.nets))
	for _, n := range f.nets {
		out = append(out, n)
	}
	return out, "", nil
}

func (f *fakeNetworks) DeleteNetwork(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nets[ref]; !ok {
		return messages.NotFound("network", ref)
	}
	if f.inUse[ref] {
		return messages.ErrNetworkInUse.WithDetail("network", ref)
	}
	delete(f.nets, ref)
	return nil
}

// UpdateNetwork applies the patch as the gateway does: a stale If-Match is
// revision_conflict, a no-op keeps the revision, a change bumps it.
func (f *fakeNetworks) UpdateNetwork(_ context.Context, _ messages.Principal, ref string, patch store.NetworkPatch) (*messages.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[ref]
	if !ok {
		return nil, messages.NotFound("network", ref)
	}
	if patch.Revision != 0 && patch.Revision != n.Revision {
		return nil, messages.ErrStaleRevision.WithDetail("current_revision", n.Revision)
	}
	next := *n
	if patch.Apply(&next) {
		next.Revision++
		f.nets[ref] = &next
	}
	return &next, nil
}
