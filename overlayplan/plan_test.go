package overlayplan_test

import (
	"reflect"
	"testing"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/overlayplan"
)

// meshNode is a node in the mesh: ready, with a key, an endpoint and a
// tunnel IP.
func meshNode(name, ip string) *messages.Node {
	return &messages.Node{ID: "id-" + name, Name: name, Phase: messages.NodeReady, TunnelIP: ip,
		Status: messages.NodeStatus{Overlay: &messages.NodeOverlay{PublicKey: "key-" + name, Endpoint: "192.0.2.1:51820"}}}
}

func peer(name, ip string) messages.DesiredPeer {
	return messages.DesiredPeer{Node: name, PublicKey: "key-" + name, Endpoint: "192.0.2.1:51820", TunnelIP: ip}
}

func network(id, name, typ string) *messages.Network {
	return &messages.Network{ID: id, Name: name, CIDR: "10.1.0.0/24", Type: typ, VNI: 4100, MTU: 1390, GatewayMAC: "02:00:00:00:00:01"}
}

func desiredNet(n *messages.Network) messages.DesiredNetwork {
	return messages.DesiredNetwork{ID: n.ID, Name: n.Name, CIDR: n.CIDR, Type: n.Type, VNI: n.VNI, MTU: n.MTU,
		Egress: n.Egress, GatewayMAC: n.GatewayMAC}
}

// vm is a VM placed on node (or unplaced if node is empty) with one NIC per
// entry of nics: network id → MAC.
func vm(node string, nics ...[2]string) *messages.VM {
	v := &messages.VM{Status: messages.VMStatus{Node: node}}
	for _, n := range nics {
		v.Status.NICs = append(v.Status.NICs, messages.NICStatus{NetworkID: n[0], MAC: n[1]})
	}
	return v
}

func view(t *testing.T, nodes []*messages.Node, nets []*messages.Network, vms []*messages.VM) *overlayplan.View {
	t.Helper()
	v := overlayplan.NewView()
	for _, n := range nodes {
		v.AddNode(n)
	}
	for _, n := range nets {
		v.AddNetwork(n)
	}
	for _, m := range vms {
		v.AddVM(m)
	}
	if err := v.Seal(nil); err != nil {
		t.Fatal(err)
	}
	return v
}

var (
	blue = network("net-blue", "blue", messages.NetworkOverlay)
	red  = network("net-red", "red", messages.NetworkOverlay)
	lan  = network("net-lan", "lan", messages.NetworkLocal)
)

// TestPlan: what each node's plan holds, from nodes, networks and VMs.
func TestPlan(t *testing.T) {
	a, b := meshNode("a", "10.240.0.1"), meshNode("b", "10.240.0.2")
	unreachable := meshNode("u", "10.240.0.5")
	unreachable.Phase = messages.NodeUnreachable
	noIP := meshNode("noip", "")
	noKey := meshNode("nokey", "10.240.0.3")
	noKey.Status.Overlay = nil
	noEndpoint := meshNode("noendpoint", "10.240.0.6")
	noEndpoint.Status.Overlay.Endpoint = ""
	gone := meshNode("gone", "10.240.0.4")
	gone.Phase = messages.NodeGone
	pending := meshNode("pending", "10.240.0.7")
	pending.Phase = messages.NodePending

	for _, tc := range []struct {
		name  string
		nodes []*messages.Node
		nets  []*messages.Network
		vms   []*messages.VM
		node  string
		want  *messages.DesiredOverlay
	}{
		{name: "two nodes, no networks: each the other's only peer",
			nodes: []*messages.Node{b, a}, node: "a",
			want: &messages.DesiredOverlay{Peers: []messages.DesiredPeer{peer("b", "10.240.0.2")}}},
		{name: "two nodes one network: the other's NIC points at its tunnel IP, own NICs never",
			nodes: []*messages.Node{a, b}, nets: []*messages.Network{blue},
			vms:  []*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"}), vm("b", [2]string{"net-blue", "02:bb:00:00:00:01"})},
			node: "b",
			want: &messages.DesiredOverlay{Networks: []messages.DesiredNetwork{desiredNet(blue)},
				Peers: []messages.DesiredPeer{peer("a", "10.240.0.1")},
				FDB:   []messages.DesiredFDBEntry{{Network: "net-blue", MAC: "02:aa:00:00:00:01", Remote: "10.240.0.1"}}}},
		{name: "a network only the other node has is not carried",
			nodes: []*messages.Node{a, b}, nets: []*messages.Network{blue},
			vms:  []*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"})},
			node: "b",
			want: &messages.DesiredOverlay{Peers: []messages.DesiredPeer{peer("a", "10.240.0.1")}}},
		{name: "nodes without a tunnel IP, key or endpoint, pending or gone are no peers, and their NICs get no entry",
			nodes: []*messages.Node{a, noIP, noKey, noEndpoint, gone, pending}, nets: []*messages.Network{blue},
			vms: []*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"}),
				vm("noip", [2]string{"net-blue", "02:00:00:00:00:02"}), vm("nokey", [2]string{"net-blue", "02:00:00:00:00:03"}),
				vm("gone", [2]string{"net-blue", "02:00:00:00:00:04"}), vm("pending", [2]string{"net-blue", "02:00:00:00:00:05"}),
				vm("noendpoint", [2]string{"net-blue", "02:00:00:00:00:06"})},
			node: "a",
			want: &messages.DesiredOverlay{Networks: []messages.DesiredNetwork{desiredNet(blue)}}},
		{name: "an unreachable node stays a peer",
			nodes: []*messages.Node{a, unreachable}, nets: []*messages.Network{blue},
			vms:  []*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"}), vm("u", [2]string{"net-blue", "02:00:00:00:00:05"})},
			node: "a",
			want: &messages.DesiredOverlay{Networks: []messages.DesiredNetwork{desiredNet(blue)},
				Peers: []messages.DesiredPeer{peer("u", "10.240.0.5")},
				FDB:   []messages.DesiredFDBEntry{{Network: "net-blue", MAC: "02:00:00:00:00:05", Remote: "10.240.0.5"}}}},
		{name: "a network removed (or created after the list): its NICs count nowhere",
			nodes: []*messages.Node{a, b}, nets: []*messages.Network{red},
			vms:  []*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"}), vm("b", [2]string{"net-blue", "02:bb:00:00:00:01"})},
			node: "a",
			want: &messages.DesiredOverlay{Peers: []messages.DesiredPeer{peer("b", "10.240.0.2")}}},
		{name: "a local network is carried without entries",
			nodes: []*messages.Node{a, b}, nets: []*messages.Network{lan},
			vms:  []*messages.VM{vm("a", [2]string{"net-lan", "02:aa:00:00:00:01"}), vm("b", [2]string{"net-lan", "02:bb:00:00:00:01"})},
			node: "a",
			want: &messages.DesiredOverlay{Networks: []messages.DesiredNetwork{desiredNet(lan)},
				Peers: []messages.DesiredPeer{peer("b", "10.240.0.2")}}},
		{name: "an unplaced VM and a NIC without a MAC add nothing",
			nodes: []*messages.Node{a, b}, nets: []*messages.Network{blue},
			vms: []*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"}), vm("", [2]string{"net-blue", "02:cc:00:00:00:01"}),
				vm("b", [2]string{"net-blue", ""})},
			node: "a",
			want: &messages.DesiredOverlay{Networks: []messages.DesiredNetwork{desiredNet(blue)},
				Peers: []messages.DesiredPeer{peer("b", "10.240.0.2")}}},
		{name: "networks by name, entries by network then MAC, peers by name, a network once per node",
			nodes: []*messages.Node{meshNode("c", "10.240.0.9"), b, a}, nets: []*messages.Network{red, blue},
			vms: []*messages.VM{
				vm("a", [2]string{"net-red", "02:aa:00:00:00:01"}, [2]string{"net-blue", "02:aa:00:00:00:02"}, [2]string{"net-red", "02:aa:00:00:00:03"}),
				vm("c", [2]string{"net-red", "02:cc:00:00:00:09"}, [2]string{"net-blue", "02:cc:00:00:00:01"}),
				vm("b", [2]string{"net-red", "02:bb:00:00:00:01"})},
			node: "a",
			want: &messages.DesiredOverlay{Networks: []messages.DesiredNetwork{desiredNet(blue), desiredNet(red)},
				Peers: []messages.DesiredPeer{peer("b", "10.240.0.2"), peer("c", "10.240.0.9")},
				FDB: []messages.DesiredFDBEntry{{Network: "net-blue", MAC: "02:cc:00:00:00:01", Remote: "10.240.0.9"},
					{Network: "net-red", MAC: "02:bb:00:00:00:01", Remote: "10.240.0.2"},
					{Network: "net-red", MAC: "02:cc:00:00:00:09", Remote: "10.240.0.9"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := overlayplan.Plan(view(t, tc.nodes, tc.nets, tc.vms), tc.node)
			want := tc.want
			want.ListenPort = messages.WireGuardListenPort
			if want.Networks == nil {
				want.Networks = []messages.DesiredNetwork{}
			}
			if want.Peers == nil {
				want.Peers = []messages.DesiredPeer{}
			}
			if want.FDB == nil {
				want.FDB = []messages.DesiredFDBEntry{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("plan of %s:\n got %+v\nwant %+v", tc.node, got, want)
			}
		})
	}
}

// TestFor: a node gets an overlay once it has a key and a tunnel IP; the
// answer carries its tunnel IP and a revision that follows the IP and the
// WireGuard port setting.
func TestFor(t *testing.T) {
	a, b := meshNode("a", "10.240.0.1"), meshNode("b", "10.240.0.2")
	v := view(t, []*messages.Node{a, b}, []*messages.Network{blue},
		[]*messages.VM{vm("a", [2]string{"net-blue", "02:aa:00:00:00:01"}), vm("b", [2]string{"net-blue", "02:bb:00:00:00:01"})})

	noIP := meshNode("a", "")
	noKey := meshNode("a", "10.240.0.1")
	noKey.Status.Overlay.PublicKey = ""
	noOverlay := meshNode("a", "10.240.0.1")
	noOverlay.Status.Overlay = nil
	for what, n := range map[string]*messages.Node{"nil": nil, "no tunnel ip": noIP, "no key": noKey, "no overlay": noOverlay} {
		if d := v.For(n, 0); d != nil {
			t.Errorf("%s: got an overlay %+v", what, d)
		}
	}

	d := v.For(a, 0)
	if d == nil || d.TunnelIP != "10.240.0.1" || len(d.Revision) != 32 || d.ListenPort != messages.WireGuardListenPort ||
		len(d.Peers) != 1 || len(d.FDB) != 1 {
		t.Fatalf("overlay of a: %+v", d)
	}
	if again := v.For(a, messages.WireGuardListenPort); again.Revision != d.Revision {
		t.Error("the default port given explicitly changed the revision")
	}
	moved := meshNode("a", "10.240.0.9")
	if o := v.For(moved, 0); o.TunnelIP != "10.240.0.9" || o.Revision == d.Revision {
		t.Errorf("a new tunnel IP: %+v, revision was %s", o, d.Revision)
	}
	port := v.For(a, 51999)
	if port.ListenPort != 51999 || port.Revision == d.Revision {
		t.Errorf("port setting: %+v, revision was %s", port, d.Revision)
	}
	if v.For(a, 0).ListenPort != messages.WireGuardListenPort {
		t.Error("the port setting leaked into the memo")
	}
}
