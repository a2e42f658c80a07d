package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
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
// for per-node assembly. It is immutable but for its memo.
type overlayView struct {
	until time.Time // wall clock
	// Peers are the nodes in the mesh, by name: ready or unreachable (a
	// briefly silent node stays a peer, so traffic resumes when it returns
	// without waiting for a rebuild), with a key, an endpoint and a tunnel IP.
	Peers []messages.DesiredPeer
	// peerIP is each peer's tunnel IP by node name.
	peerIP map[string]string
	// Networks by id, as nodes build them.
	Networks map[string]messages.DesiredNetwork
	// NetsByNode is the set of network ids each node has NICs on, by name.
	NetsByNode map[string][]string
	// NICsByNet are the NICs of placed VMs, by network id.
	NICsByNet map[string][]placedNIC

	// sum digests the exported fields: every node's overlay is a function
	// of them, so a rebuilt view with the same sum keeps the memo.
	sum [sha256.Size]byte
	// memo holds each node's assembled overlay while the content stays
	// the same, across rebuilds.
	memo *overlayMemo
}

// overlayMemo memoizes each node's overlay (without its tunnel IP, which
// comes from its actor) by node id.
type overlayMemo struct {
	mu     sync.Mutex
	byNode map[string]memoOverlay
}

type memoOverlay struct {
	d   *messages.DesiredOverlay
	sum [sha256.Size]byte // digestOverlay(d), for its revision
}

// placedNIC is a NIC of a VM placed on a node.
type placedNIC struct {
	MAC  string `json:"mac"`
	Node string `json:"node"`
}

func newOverlayView(ttl time.Duration) *overlayView {
	return &overlayView{until: time.Now().Add(ttl), peerIP: map[string]string{},
		Networks: map[string]messages.DesiredNetwork{}, NetsByNode: map[string][]string{},
		NICsByNet: map[string][]placedNIC{}, memo: &overlayMemo{byNode: map[string]memoOverlay{}}}
}

// seal computes the view's digest once it is complete, and takes the memo
// of prev when the content is the same: in a quiet cluster a node's overlay
// is assembled and digested once, not at every rebuild.
func (v *overlayView) seal(prev *overlayView) error {
	b, err := json.Marshal(v) // map keys are sorted: deterministic
	if err != nil {
		return err
	}
	v.sum = sha256.Sum256(b)
	if prev != nil && prev.sum == v.sum {
		v.memo = prev.memo
	}
	return nil
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
	nv, err := buildOverlayView(ctx, st, v)
	if err != nil {
		if v != nil {
			return v, nil // the old view beats no overlay; the next heartbeat retries
		}
		return nil, err
	}
	c.view.Store(nv)
	return nv, nil
}

// buildOverlayView reads every node, network and VM. prev is the view it
// replaces, or nil.
func buildOverlayView(ctx context.Context, st *store.Store, prev *overlayView) (*overlayView, error) {
	v := newOverlayView(overlayViewTTL)
	err := listAll(ctx, func(p store.Page) ([]*messages.Node, string, error) {
		return store.List[messages.Node](ctx, st, store.Nodes, p)
	}, func(n *messages.Node) {
		o := n.Status.Overlay
		if (n.Phase != messages.NodeReady && n.Phase != messages.NodeUnreachable) ||
			o == nil || o.PublicKey == "" || o.Endpoint == "" || n.TunnelIP == "" {
			return
		}
		v.Peers = append(v.Peers, messages.DesiredPeer{Node: n.Name, PublicKey: o.PublicKey, Endpoint: o.Endpoint, TunnelIP: n.TunnelIP})
		v.peerIP[n.Name] = n.TunnelIP
	})
	if err != nil {
		return nil, fmt.Errorf("overlay view: list nodes: %w", err)
	}
	slices.SortFunc(v.Peers, func(a, b messages.DesiredPeer) int { return cmp.Compare(a.Node, b.Node) })
	err = listAll(ctx, func(p store.Page) ([]*messages.Network, string, error) {
		return st.ListNetworks(ctx, p)
	}, func(n *messages.Network) {
		v.Networks[n.ID] = messages.DesiredNetwork{ID: n.ID, Name: n.Name, CIDR: n.CIDR, Type: n.Type,
			VNI: n.VNI, MTU: n.MTU, Egress: n.Egress, GatewayMAC: n.GatewayMAC}
	})
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
			if _, ok := v.Networks[nic.NetworkID]; !ok || nic.MAC == "" {
				continue // a network created after the list: the next view has it
			}
			if !slices.Contains(v.NetsByNode[node], nic.NetworkID) {
				v.NetsByNode[node] = append(v.NetsByNode[node], nic.NetworkID)
			}
			v.NICsByNet[nic.NetworkID] = append(v.NICsByNet[nic.NetworkID], placedNIC{MAC: nic.MAC, Node: node})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("overlay view: list vms: %w", err)
	}
	if err := v.seal(prev); err != nil {
		return nil, fmt.Errorf("overlay view: %w", err)
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
// the MAC of every NIC on another peer → that peer's tunnel IP. Its revision
// digests all of it. The slices are shared by every heartbeat of the node
// while the content stays the same: read only.
func (v *overlayView) desired(id, name, tunnelIP string) (*messages.DesiredOverlay, error) {
	v.memo.mu.Lock()
	m, ok := v.memo.byNode[id]
	v.memo.mu.Unlock()
	if !ok {
		d := v.assemble(name)
		m = memoOverlay{d: d, sum: digestOverlay(d)}
		v.memo.mu.Lock()
		v.memo.byNode[id] = m
		v.memo.mu.Unlock()
	}
	out := *m.d
	out.TunnelIP = tunnelIP
	out.Revision = overlayRevision(m.sum, tunnelIP)
	return &out, nil
}

// digestOverlay hashes every field of d but its revision and tunnel IP. It
// appends the fields by hand: JSON would cost as much again as assembling
// (TestOverlayDigestCoversEveryField fails when a field is added and not
// here).
func digestOverlay(d *messages.DesiredOverlay) [sha256.Size]byte {
	b := make([]byte, 0, 64*(len(d.Networks)+len(d.Peers)+len(d.FDB)+1))
	str := func(s string) { b = append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	num := func(i int) { b = binary.AppendVarint(b, int64(i)) }
	num(d.ListenPort)
	num(len(d.Networks))
	for _, n := range d.Networks {
		str(n.ID)
		str(n.Name)
		str(n.CIDR)
		str(n.Type)
		num(n.VNI)
		num(n.MTU)
		egress := byte(0)
		if n.Egress {
			egress = 1
		}
		b = append(b, egress)
		str(n.GatewayMAC)
	}
	num(len(d.Peers))
	for _, p := range d.Peers {
		str(p.Node)
		str(p.PublicKey)
		str(p.Endpoint)
		str(p.TunnelIP)
	}
	num(len(d.FDB))
	for _, e := range d.FDB {
		str(e.Network)
		str(e.MAC)
		str(e.Remote)
	}
	return sha256.Sum256(b)
}

// overlayRevision names an overlay by the digest of its node-independent
// part and the node's tunnel IP: 128 bits, in hex.
func overlayRevision(sum [sha256.Size]byte, tunnelIP string) string {
	rev := sha256.Sum256(append(sum[:], tunnelIP...))
	return hex.EncodeToString(rev[:16])
}

func (v *overlayView) assemble(name string) *messages.DesiredOverlay {
	d := &messages.DesiredOverlay{ListenPort: messages.WireGuardListenPort,
		Networks: []messages.DesiredNetwork{}, Peers: make([]messages.DesiredPeer, 0, len(v.Peers)), FDB: []messages.DesiredFDBEntry{}}
	for _, p := range v.Peers {
		if p.Node != name {
			d.Peers = append(d.Peers, p)
		}
	}
	for _, id := range v.NetsByNode[name] {
		n := v.Networks[id]
		d.Networks = append(d.Networks, n)
		if n.Type != messages.NetworkOverlay {
			continue
		}
		for _, nic := range v.NICsByNet[id] {
			// A VM on a node outside the mesh is unreachable: no entry.
			if ip, ok := v.peerIP[nic.Node]; ok && nic.Node != name {
				d.FDB = append(d.FDB, messages.DesiredFDBEntry{Network: id, MAC: nic.MAC, Remote: ip})
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
// port is the settings' WireGuard port.
func (g *Gateway) desiredOverlay(ctx context.Context, n *messages.Node, port int) (*messages.DesiredOverlay, error) {
	if n == nil || n.TunnelIP == "" || n.Status.Overlay == nil || n.Status.Overlay.PublicKey == "" {
		return nil, nil
	}
	v, err := g.ov.get(ctx, g.st)
	if err != nil {
		return nil, err
	}
	d, err := v.desired(n.ID, n.Name, n.TunnelIP)
	if err != nil || port == 0 || port == d.ListenPort {
		return d, err
	}
	// The port is a setting, not part of the view: it changes the revision
	// like the tunnel IP does.
	d.ListenPort = port
	d.Revision = overlayRevision(sha256.Sum256([]byte(d.Revision)), fmt.Sprintf("%s:%d", n.TunnelIP, port))
	return d, nil
}
