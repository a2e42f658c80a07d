package overlayplan

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/otherix/otherix/messages"
)

// syntheticView is a 500-node mesh with 50 overlay networks and 5,000 NICs,
// 10 per node, spread over the networks.
func syntheticView(nodes, networks, nicsPerNode int) *View {
	v := NewView()
	for i := range networks {
		id := fmt.Sprintf("net-%03d", i)
		v.Networks[id] = messages.DesiredNetwork{ID: id, Name: id, CIDR: fmt.Sprintf("10.%d.0.0/16", i), Type: messages.NetworkOverlay,
			VNI: 4096 + i, MTU: 1390, GatewayMAC: "02:00:00:00:00:01"}
	}
	for i := range nodes {
		name, ip := fmt.Sprintf("node-%03d", i), fmt.Sprintf("10.240.%d.%d", i/250, i%250+1)
		v.Peers = append(v.Peers, messages.DesiredPeer{Node: name, PublicKey: "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=",
			Endpoint: fmt.Sprintf("192.0.2.%d:51820", i%250+1), TunnelIP: ip})
		v.peerIP[name] = ip
		for j := range nicsPerNode {
			net := fmt.Sprintf("net-%03d", (i+j)%networks)
			v.NetsByNode[name] = append(v.NetsByNode[name], net)
			v.NICsByNet[net] = append(v.NICsByNet[net], NIC{MAC: fmt.Sprintf("02:aa:%02x:%02x:%02x:00", i>>8, i&0xff, j), Node: name})
		}
	}
	return v
}

// BenchmarkDesiredOverlay is one heartbeat's overlay work: on a warm memo
// (the node's overlay unchanged since it was assembled), on a cold one
// (assembled and digested), and the JSON encoding of the response with the
// whole overlay and with its revision only (the agent holds it already).
func BenchmarkDesiredOverlay(b *testing.B) {
	v := syntheticView(500, 50, 10)
	desired := func(b *testing.B) *messages.DesiredOverlay {
		return v.desired("id-7", "node-007", "10.240.0.8")
	}
	b.Run("warm", func(b *testing.B) {
		desired(b)
		for b.Loop() {
			desired(b)
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			v.memo = &memo{byNode: map[string]memoOverlay{}}
			desired(b)
		}
	})
	encode := func(b *testing.B, ds messages.DesiredState) {
		resp := messages.HeartbeatResponse{IntervalSeconds: 30, Desired: ds}
		for b.Loop() {
			if _, err := json.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("encode-whole", func(b *testing.B) {
		d := desired(b)
		encode(b, messages.DesiredState{Settings: messages.DefaultSettings(), Overlay: d, OverlayRevision: d.Revision})
	})
	b.Run("encode-unchanged", func(b *testing.B) {
		encode(b, messages.DesiredState{Settings: messages.DefaultSettings(), OverlayRevision: desired(b).Revision})
	})
}

// TestOverlayRevision: the revision follows the content and the tunnel IP,
// and a view rebuilt with the same content keeps the memo.
func TestOverlayRevision(t *testing.T) {
	rev := func(v *View, id, name, ip string) string {
		return v.desired(id, name, ip).Revision
	}
	seal := func(v, prev *View) *View {
		if err := v.Seal(prev); err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := seal(syntheticView(20, 4, 3), nil)
	r7 := rev(a, "id-7", "node-007", "10.240.0.8")
	if len(r7) != 32 || rev(a, "id-7", "node-007", "10.240.0.8") != r7 {
		t.Fatalf("revision %q not stable", r7)
	}
	if rev(a, "id-7", "node-007", "10.240.0.9") == r7 {
		t.Error("a new tunnel IP kept the revision")
	}
	if rev(a, "id-8", "node-008", "10.240.0.8") == r7 {
		t.Error("another node's overlay has the same revision")
	}

	same := seal(syntheticView(20, 4, 3), a)
	if same.memo != a.memo || rev(same, "id-7", "node-007", "10.240.0.8") != r7 {
		t.Error("a view with the same content did not keep the memo and revision")
	}
	// Every input must reach the revision of a node it concerns.
	changes := map[string]func(v *View){
		"peer key":    func(v *View) { v.Peers[3].PublicKey = "b3RoZXIga2V5IG90aGVyIGtleSBvdGhlciBrZXkgb3Q=" },
		"network mtu": func(v *View) { n := v.Networks["net-001"]; n.MTU = 1300; v.Networks["net-001"] = n },
		"egress":      func(v *View) { n := v.Networks["net-000"]; n.Egress = true; v.Networks["net-000"] = n },
		"nic moved":   func(v *View) { v.NICsByNet["net-003"][0].Node = "node-019" },
	}
	for what, change := range changes {
		v := syntheticView(20, 4, 3)
		change(v)
		seal(v, a)
		if v.memo == a.memo {
			t.Errorf("%s: the memo was kept", what)
		}
		if rev(v, "id-7", "node-007", "10.240.0.8") == r7 {
			t.Errorf("%s: the revision did not change", what)
		}
	}
}

// TestOverlayDigestCoversEveryField changes each field of a desired overlay
// in turn: every change but the revision and tunnel IP (which the revision
// adds itself) must change the digest.
func TestOverlayDigestCoversEveryField(t *testing.T) {
	base := func() *messages.DesiredOverlay {
		return &messages.DesiredOverlay{ListenPort: 51820,
			Networks: []messages.DesiredNetwork{{ID: "n", Name: "blue", CIDR: "10.0.0.0/24", Type: "overlay", VNI: 7, MTU: 1390, GatewayMAC: "02:00:00:00:00:01"}},
			Peers:    []messages.DesiredPeer{{Node: "b", PublicKey: "k", Endpoint: "192.0.2.2:51820", TunnelIP: "10.240.0.2"}},
			FDB:      []messages.DesiredFDBEntry{{Network: "n", MAC: "02:aa:00:00:00:01", Remote: "10.240.0.2"}}}
	}
	want := Digest(base())
	// bump changes one field of a struct value, whatever its kind.
	bump := func(f reflect.Value) {
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Int:
			f.SetInt(f.Int() + 1)
		case reflect.Bool:
			f.SetBool(!f.Bool())
		default:
			t.Fatalf("field kind %s: teach this test and Digest about it", f.Kind())
		}
	}
	try := func(what string, change func(d *messages.DesiredOverlay)) {
		d := base()
		change(d)
		if Digest(d) == want {
			t.Errorf("changing %s does not change the digest: add it to Digest", what)
		}
	}
	top := reflect.TypeOf(messages.DesiredOverlay{})
	for i := range top.NumField() {
		f := top.Field(i)
		switch f.Name {
		case "Revision", "TunnelIP":
			continue
		}
		if f.Type.Kind() != reflect.Slice {
			try(f.Name, func(d *messages.DesiredOverlay) { bump(reflect.ValueOf(d).Elem().Field(i)) })
			continue
		}
		for j := range f.Type.Elem().NumField() {
			try(f.Name+"."+f.Type.Elem().Field(j).Name, func(d *messages.DesiredOverlay) {
				bump(reflect.ValueOf(d).Elem().Field(i).Index(0).Field(j))
			})
		}
	}
}
