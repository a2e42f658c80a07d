package gateway

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

// syntheticView is a 500-node mesh with 50 overlay networks and 5,000 NICs,
// 10 per node, spread over the networks.
func syntheticView(nodes, networks, nicsPerNode int) *overlayView {
	v := &overlayView{until: time.Now().Add(time.Hour), peerIP: map[string]string{},
		networks: map[string]*messages.Network{}, netsByNode: map[string][]string{},
		nicsByNet: map[string][]placedNIC{}, perNode: map[string]*messages.DesiredOverlay{}}
	for i := range networks {
		id := fmt.Sprintf("net-%03d", i)
		v.networks[id] = &messages.Network{ID: id, Name: id, CIDR: fmt.Sprintf("10.%d.0.0/16", i), Type: messages.NetworkOverlay,
			VNI: 4096 + i, MTU: 1390, GatewayMAC: "02:00:00:00:00:01"}
	}
	for i := range nodes {
		name, ip := fmt.Sprintf("node-%03d", i), fmt.Sprintf("10.240.%d.%d", i/250, i%250+1)
		v.peers = append(v.peers, messages.DesiredPeer{Node: name, PublicKey: "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=",
			Endpoint: fmt.Sprintf("192.0.2.%d:51820", i%250+1), TunnelIP: ip})
		v.peerIP[name] = ip
		for j := range nicsPerNode {
			net := fmt.Sprintf("net-%03d", (i+j)%networks)
			v.netsByNode[name] = append(v.netsByNode[name], net)
			v.nicsByNet[net] = append(v.nicsByNet[net], placedNIC{mac: fmt.Sprintf("02:aa:%02x:%02x:%02x:00", i>>8, i&0xff, j), node: name})
		}
	}
	return v
}

// BenchmarkDesiredOverlay is one heartbeat's overlay work on a warm view
// (memoized per node) and a cold one (assembled), and the JSON encoding of
// the response, which at 500 peers costs more than the lookup.
func BenchmarkDesiredOverlay(b *testing.B) {
	v := syntheticView(500, 50, 10)
	b.Run("warm", func(b *testing.B) {
		v.desired("id-7", "node-007", "10.240.0.8")
		for b.Loop() {
			v.desired("id-7", "node-007", "10.240.0.8")
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			v.assemble("node-007")
		}
	})
	b.Run("encode", func(b *testing.B) {
		d := v.desired("id-7", "node-007", "10.240.0.8")
		resp := messages.HeartbeatResponse{IntervalSeconds: 30, Desired: messages.DesiredState{Settings: messages.DefaultSettings(), Overlay: d}}
		for b.Loop() {
			if _, err := json.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}
