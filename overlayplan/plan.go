// Package overlayplan computes each node's share of the network overlay: the
// WireGuard peers it meshes with, the networks it carries and the VXLAN
// forwarding entries that send a VM's MAC to the node that runs it. It is
// pure: nodes, networks and VMs come in as plain values, a
// messages.DesiredOverlay per node goes out, and nothing here reads etcd or
// talks to an actor. The control plane loads the inputs (actors/gateway) and
// sends the result down in heartbeats; the agent applies it
// (nodeagent/overlay).
//
// The name says "plan" because this is the control plane's computation of the
// network overlay, not the agent that applies it and not a qcow2 overlay
// image.
package overlayplan

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"slices"
	"sync"

	"github.com/otherix/otherix/messages"
)

// View is one snapshot of what the overlay is computed from, indexed for
// per-node assembly. Fill it with AddNode, AddNetwork and then AddVM (a VM's
// NICs count only on networks already added), then Seal it; after Seal it is
// immutable but for its memo, and safe for concurrent use.
type View struct {
	// Peers are the nodes in the mesh, sorted by name once sealed: ready or
	// unreachable (a briefly silent node stays a peer, so traffic resumes
	// when it returns without waiting for a rebuild), with a key, an
	// endpoint and a tunnel IP.
	Peers []messages.DesiredPeer
	// peerIP is each peer's tunnel IP by node name.
	peerIP map[string]string
	// Networks by id, as nodes build them.
	Networks map[string]messages.DesiredNetwork
	// NetsByNode is the set of network ids each node has NICs on, by name.
	NetsByNode map[string][]string
	// NICsByNet are the NICs of placed VMs, by network id.
	NICsByNet map[string][]NIC

	// sum digests the exported fields: every node's overlay is a function
	// of them, so a rebuilt view with the same sum keeps the memo.
	sum [sha256.Size]byte
	// memo holds each node's assembled overlay while the content stays
	// the same, across rebuilds.
	memo *memo
}

// NIC is a NIC of a VM placed on a node.
type NIC struct {
	MAC  string `json:"mac"`
	Node string `json:"node"`
}

// memo memoizes each node's overlay (without its tunnel IP, which comes
// from the node) by node id.
type memo struct {
	mu     sync.Mutex
	byNode map[string]memoOverlay
}

type memoOverlay struct {
	d   *messages.DesiredOverlay
	sum [sha256.Size]byte // Digest(d), for its revision
}

// NewView returns an empty view.
func NewView() *View {
	return &View{peerIP: map[string]string{},
		Networks: map[string]messages.DesiredNetwork{}, NetsByNode: map[string][]string{},
		NICsByNet: map[string][]NIC{}, memo: &memo{byNode: map[string]memoOverlay{}}}
}

// AddNode adds n to the mesh if it belongs there: ready or unreachable, with
// a reported WireGuard key and endpoint, and a tunnel IP.
func (v *View) AddNode(n *messages.Node) {
	o := n.Status.Overlay
	if (n.Phase != messages.NodeReady && n.Phase != messages.NodeUnreachable) ||
		o == nil || o.PublicKey == "" || o.Endpoint == "" || n.TunnelIP == "" {
		return
	}
	v.Peers = append(v.Peers, messages.DesiredPeer{Node: n.Name, PublicKey: o.PublicKey, Endpoint: o.Endpoint, TunnelIP: n.TunnelIP})
	v.peerIP[n.Name] = n.TunnelIP
}

// AddNetwork adds a network as nodes build it.
func (v *View) AddNetwork(n *messages.Network) {
	v.Networks[n.ID] = messages.DesiredNetwork{ID: n.ID, Name: n.Name, CIDR: n.CIDR, Type: n.Type,
		VNI: n.VNI, MTU: n.MTU, Egress: n.Egress, GatewayMAC: n.GatewayMAC}
}

// AddVM adds the NICs of a placed VM (its status names a node) on networks
// already added; an unplaced VM adds nothing.
func (v *View) AddVM(vm *messages.VM) {
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
		v.NICsByNet[nic.NetworkID] = append(v.NICsByNet[nic.NetworkID], NIC{MAC: nic.MAC, Node: node})
	}
}

// Seal completes the view: it sorts the peers, computes the view's digest,
// and takes the memo of prev (the view it replaces, or nil) when the content
// is the same: in a quiet cluster a node's overlay is assembled and digested
// once, not at every rebuild.
func (v *View) Seal(prev *View) error {
	slices.SortFunc(v.Peers, func(a, b messages.DesiredPeer) int { return cmp.Compare(a.Node, b.Node) })
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

// For is n's overlay: nil until n has reported a WireGuard key and holds a
// tunnel IP. port is the settings' WireGuard port (0: the default). The
// slices are shared by every call for the node while the content stays the
// same: read only.
func (v *View) For(n *messages.Node, port int) *messages.DesiredOverlay {
	if n == nil || n.TunnelIP == "" || n.Status.Overlay == nil || n.Status.Overlay.PublicKey == "" {
		return nil
	}
	return WithListenPort(v.desired(n.ID, n.Name, n.TunnelIP), n.TunnelIP, port)
}

// desired is the overlay of node id (named name) at tunnelIP, memoized by
// id, with its revision.
func (v *View) desired(id, name, tunnelIP string) *messages.DesiredOverlay {
	v.memo.mu.Lock()
	m, ok := v.memo.byNode[id]
	v.memo.mu.Unlock()
	if !ok {
		d := Plan(v, name)
		m = memoOverlay{d: d, sum: Digest(d)}
		v.memo.mu.Lock()
		v.memo.byNode[id] = m
		v.memo.mu.Unlock()
	}
	out := *m.d
	out.TunnelIP = tunnelIP
	out.Revision = Revision(m.sum, tunnelIP)
	return &out
}

// Plan is the overlay of the node named name, without its tunnel IP and
// revision: the networks it has NICs on (by name), every other peer, and for
// each overlay network among them the MAC of every NIC on another peer →
// that peer's tunnel IP (by network, then MAC). A NIC on a node outside the
// mesh is unreachable and gets no entry; a local network never has entries.
func Plan(v *View, name string) *messages.DesiredOverlay {
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
