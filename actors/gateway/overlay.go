package gateway

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// overlayViewTTL is how long the overlay view (nodes, networks and VM NICs,
// read from etcd) serves heartbeats before it is rebuilt, and so how stale
// a node's desired overlay can be: a peer that just joined, a VM just placed
// or deleted, reach other nodes' peer sets and forwarding databases at most
// this much plus one rebuild later than etcd has them. That is fine: agents
// reconcile the whole data plane on every heartbeat, so a late entry is
// filled at the next beat, and the heartbeat interval (30 s) is a larger
// delay anyway. In exchange a heartbeat costs map lookups, not three prefix
// reads (issue #4: 333 heartbeats/s must stay well under 30 % of a core).
const overlayViewTTL = heartbeatCacheTTL

// overlayCache holds the current overlay view. Readers never wait for a
// rebuild when a view exists: one caller rebuilds an expired view while the
// others go on with the old one. The zero value is ready.
type overlayCache struct {
	view    atomic.Pointer[overlayView]
	buildMu sync.Mutex
	// expired forces the next get to rebuild (tests).
	expired atomic.Bool
}

// overlayView is one snapshot of what the overlay is computed from, indexed
// for per-node assembly. It is immutable but for perNode.
type overlayView struct {
	until time.Time // wall clock
	// peers are the nodes in the mesh, by name: ready or unreachable (a
	// briefly silent node stays a peer, so traffic resumes when it returns
	// without waiting for a rebuild), with a key, an endpoint and a tunnel IP.
	peers []messages.DesiredPeer
	// peerIP is each peer's tunnel IP by node name.
	peerIP map[string]string
	// networks by id.
	networks map[string]*messages.Network
	// netsByNode is the set of network ids each node has NICs on, by name.
	netsByNode map[string][]string
	// nicsByNet are the NICs of placed VMs, by network id.
	nicsByNet map[string][]placedNIC

	mu sync.Mutex
	// perNode memoizes each node's overlay (without its tunnel IP, which
	// comes from its actor) for the view's lifetime, by node id.
	perNode map[string]*messages.DesiredOverlay
}

// placedNIC is a NIC of a VM placed on a node.
type placedNIC struct {
	mac, node string
}

// expire makes the next heartbeat rebuild the view.
func (c *overlayCache) expire() { c.expired.Store(true) }

// get returns a live view, rebuilding it when expired.
func (c *overlayCache) get(ctx context.Context, st *store.Store) (*overlayView, error) {
	fresh := func(v *overlayView) bool { return v != nil && !c.expired.Load() && time.Now().Before(v.until) }
	v := c.view.Load()
	if fresh(v) {
		return v, nil
	}
	if v != nil && !c.expired.Load() {
		if !c.buildMu.TryLock() {
			return v, nil // another heartbeat is rebuilding it
		}
	} else {
		c.buildMu.Lock()
	}
	defer c.buildMu.Unlock()
	if cur := c.view.Load(); fresh(cur) {
		return cur, nil // rebuilt while we waited
	}
	c.expired.Store(false)
	nv, err := buildOverlayView(ctx, st)
	if err != nil {
		if v != nil {
			return v, nil // the old view beats no overlay; the next heartbeat retries
		}
		return nil, err
	}
	c.view.Store(nv)
	return nv, nil
}

// buildOverlayView reads every node, network and VM.
func buildOverlayView(ctx context.Context, st *store.Store) (*overlayView, error) {
	v := &overlayView{until: time.Now().Add(overlayViewTTL), peerIP: map[string]string{},
		networks: map[string]*messages.Network{}, netsByNode: map[string][]string{},
		nicsByNet: map[string][]placedNIC{}, perNode: map[string]*messages.DesiredOverlay{}}
	err := listAll(ctx, func(p store.Page) ([]*messages.Node, string, error) {
		return store.List[messages.Node](ctx, st, store.Nodes, p)
	}, func(n *messages.Node) {
		o := n.Status.Overlay
		if (n.Phase != messages.NodeReady && n.Phase != messages.NodeUnreachable) ||
			o == nil || o.PublicKey == "" || o.Endpoint == "" || n.TunnelIP == "" {
			return
		}
		v.peers = append(v.peers, messages.DesiredPeer{Node: n.Name, PublicKey: o.PublicKey, Endpoint: o.Endpoint, TunnelIP: n.TunnelIP})
		v.peerIP[n.Name] = n.TunnelIP
	})
	if err != nil {
		return nil, fmt.Errorf("overlay view: list nodes: %w", err)
	}
	slices.SortFunc(v.peers, func(a, b messages.DesiredPeer) int { return cmp.Compare(a.Node, b.Node) })
	err = listAll(ctx, func(p store.Page) ([]*messages.Network, string, error) {
		return st.ListNetworks(ctx, p)
	}, func(n *messages.Network) { v.networks[n.ID] = n })
	if err != nil {
		return nil, fmt.Errorf("overlay view: list networks: %w", err)
	}
	err = listAll(ctx, func(p store.Page) ([]*messages.VM, string, error) {
		return st.ListVMs(ctx, "", p)
	}, func(vm *messages.VM) {
		node := vm.Status.Node
		if node == "" {
			return
		}
		for _, nic := range vm.Status.NICs {
			if _, ok := v.networks[nic.NetworkID]; !ok || nic.MAC == "" {
				continue // a network created after the list: the next view has it
			}
			if !slices.Contains(v.netsByNode[node], nic.NetworkID) {
				v.netsByNode[node] = append(v.netsByNode[node], nic.NetworkID)
			}
			v.nicsByNet[nic.NetworkID] = append(v.nicsByNet[nic.NetworkID], placedNIC{mac: nic.MAC, node: node})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("overlay view: list vms: %w", err)
	}
	return v, nil
}

// listAll walks every page of a list.
func listAll[T any](ctx context.Context, list func(store.Page) ([]T, string, error), each func(T)) error {
	page := store.Page{Limit: store.MaxPageSize}
	for {
		items, next, err := list(page)
		if err != nil {
			return err
		}
		for _, it := range items {
			each(it)
		}
		if next == "" || ctx.Err() != nil {
			return ctx.Err()
		}
		page.Cursor = next
	}
}

// desired is the overlay of node id (named name) at tunnelIP: the networks
// it has NICs on, every other peer, and for each overlay network among them
// the MAC of every NIC on another peer → that peer's tunnel IP. The slices
// are shared by every heartbeat of the node within the view: read only.
func (v *overlayView) desired(id, name, tunnelIP string) *messages.DesiredOverlay {
	v.mu.Lock()
	d, ok := v.perNode[id]
	v.mu.Unlock()
	if !ok {
		d = v.assemble(name)
		v.mu.Lock()
		v.perNode[id] = d
		v.mu.Unlock()
	}
	out := *d
	out.TunnelIP = tunnelIP
	return &out
}

func (v *overlayView) assemble(name string) *messages.DesiredOverlay {
	d := &messages.DesiredOverlay{ListenPort: messages.WireGuardListenPort,
		Networks: []messages.DesiredNetwork{}, Peers: make([]messages.DesiredPeer, 0, len(v.peers)), FDB: []messages.DesiredFDBEntry{}}
	for _, p := range v.peers {
		if p.Node != name {
			d.Peers = append(d.Peers, p)
		}
	}
	for _, id := range v.netsByNode[name] {
		n := v.networks[id]
		d.Networks = append(d.Networks, messages.DesiredNetwork{ID: n.ID, Name: n.Name, CIDR: n.CIDR, Type: n.Type,
			VNI: n.VNI, MTU: n.MTU, Egress: n.Egress, GatewayMAC: n.GatewayMAC})
		if n.Type != messages.NetworkOverlay {
			continue
		}
		for _, nic := range v.nicsByNet[id] {
			// A VM on a node outside the mesh is unreachable: no entry.
			if ip, ok := v.peerIP[nic.node]; ok && nic.node != name {
				d.FDB = append(d.FDB, messages.DesiredFDBEntry{Network: id, MAC: nic.mac, Remote: ip})
			}
		}
	}
	slices.SortFunc(d.Networks, func(a, b messages.DesiredNetwork) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(d.FDB, func(a, b messages.DesiredFDBEntry) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(a.MAC, b.MAC))
	})
	return d
}

// desiredOverlay is n's overlay for its heartbeat response: nil until n has
// reported a WireGuard key and holds a tunnel IP.
func (g *Gateway) desiredOverlay(ctx context.Context, n *messages.Node) (*messages.DesiredOverlay, error) {
	if n == nil || n.TunnelIP == "" || n.Status.Overlay == nil || n.Status.Overlay.PublicKey == "" {
		return nil, nil
	}
	v, err := g.ov.get(ctx, g.st)
	if err != nil {
		return nil, err
	}
	return v.desired(n.ID, n.Name, n.TunnelIP), nil
}
