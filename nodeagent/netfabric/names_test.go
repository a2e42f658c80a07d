package netfabric

import (
	"errors"
	"net/netip"
	"testing"
)

func TestNames(t *testing.T) {
	f := &Fabric{opts: Options{IfPrefix: "ox"}}
	mac := GatewayMACFor("net-1")
	if mac.String() != GatewayMACFor("net-1").String() || mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("gateway mac %s: want deterministic, locally administered unicast", mac)
	}
	if GatewayMACFor("net-2").String() == mac.String() {
		t.Errorf("two networks share a gateway mac")
	}
	for _, c := range []struct {
		name, kind string
	}{
		{f.bridgeName("n"), kindBridge},
		{f.vxlanName("n"), kindVXLAN},
		{f.TapName(NIC{VMID: "vm", Index: 3}), kindTap},
		{"oxfoo", ""},
		{"ox", ""},
		{"br0", ""},
		{"oxbr1234567g", ""},
		{"oxbr123456789", ""},
	} {
		if got := f.ownedKind(c.name); got != c.kind {
			t.Errorf("ownedKind(%q) = %q, want %q", c.name, got, c.kind)
		}
		if len(c.name) > 15 {
			t.Errorf("%q longer than an interface name", c.name)
		}
	}
	if f.TapName(NIC{VMID: "vm", Index: 0}) == f.TapName(NIC{VMID: "vm", Index: 1}) {
		t.Errorf("two nics share a tap name")
	}
}

func TestPlanRejects(t *testing.T) {
	f := &Fabric{opts: Options{IfPrefix: "ox"}}
	ok := Network{ID: "a", CIDR: netip.MustParsePrefix("10.0.0.0/24"), Type: TypeLocal}
	tunnel := netip.MustParsePrefix("10.99.0.1/24")
	for name, d := range map[string]Desired{
		"no id":            {Networks: []Network{{CIDR: ok.CIDR, Type: TypeLocal}}},
		"ipv6 cidr":        {Networks: []Network{{ID: "a", CIDR: netip.MustParsePrefix("fd00::/64"), Type: TypeLocal}}},
		"bad type":         {Networks: []Network{{ID: "a", CIDR: ok.CIDR, Type: "vlan"}}},
		"duplicate":        {Networks: []Network{ok, ok}},
		"overlay no vni":   {Networks: []Network{{ID: "a", CIDR: ok.CIDR, Type: TypeOverlay}}, TunnelIP: tunnel},
		"overlay no tunel": {Networks: []Network{{ID: "a", CIDR: ok.CIDR, Type: TypeOverlay, VNI: 5}}},
		"nic no network":   {Networks: []Network{ok}, NICs: []NIC{{VMID: "v", Network: "b"}}},
		"tiny mtu":         {Networks: []Network{{ID: "a", CIDR: ok.CIDR, Type: TypeLocal, MTU: 100}}},
		"overlay mtu above wireguard's": {Networks: []Network{{ID: "a", CIDR: ok.CIDR, Type: TypeOverlay, VNI: 5, MTU: 1400}},
			TunnelIP: tunnel},
		"jumbo overlay in a default wireguard": {Networks: []Network{{ID: "a", CIDR: ok.CIDR, Type: TypeOverlay, VNI: 5, MTU: 8890}},
			TunnelIP: tunnel},
		"tiny wireguard mtu": {TunnelIP: tunnel, WireGuardMTU: 1000},
	} {
		if _, err := f.plan(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
	p, err := f.plan(Desired{
		Networks: []Network{{ID: "o", CIDR: netip.MustParsePrefix("10.1.0.7/24"), Type: TypeOverlay, VNI: 9}, ok},
		FDB: []FDBEntry{
			{Network: "o", MAC: GatewayMACFor("x"), Remote: netip.MustParseAddr("10.99.0.2")},
			{Network: "o", Remote: netip.MustParseAddr("10.99.0.3")},
			{Network: "a", MAC: GatewayMACFor("x"), Remote: netip.MustParseAddr("10.99.0.2")}, // local network: ignored
		},
		TunnelIP: tunnel,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.d.WireGuardMTU != DefaultWireGuardMTU {
		t.Errorf("wireguard mtu defaults to %d", p.d.WireGuardMTU)
	}
	jumbo, err := f.plan(Desired{Networks: []Network{{ID: "j", CIDR: ok.CIDR, Type: TypeOverlay, VNI: 5, MTU: 8890}},
		TunnelIP: tunnel, WireGuardMTU: 8940})
	if err != nil || jumbo.byID["j"].MTU != 8890 {
		t.Errorf("a jumbo overlay in a jumbo wireguard: %v", err)
	}
	o := p.byID["o"]
	if o.CIDR.String() != "10.1.0.0/24" || o.MTU != DefaultOverlayMTU || len(o.fdb) != 3 || len(p.byID["a"].fdb) != 0 {
		t.Errorf("plan: cidr %s mtu %d fdb %v / %v", o.CIDR, o.MTU, o.fdb, p.byID["a"].fdb)
	}
}
