package messages

import (
	"testing"
)

func TestParseNetworkCIDR(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		ok   bool
	}{
		{"10.10.0.0/24", true},
		{"10.0.0.0/8", true},
		{"192.168.1.8/29", true},
		{"10.10.0.1/24", false},   // host bits
		{"10.10.0.0/30", false},   // too small
		{"10.0.0.0/7", false},     // too large
		{"fd00::/64", false},      // IPv6
		{"169.254.0.0/24", false}, // link-local, the anycast gateway's
		{"127.0.0.0/8", false},
		{"224.0.0.0/8", false},
		{"nonsense", false},
	} {
		t.Run(tc.cidr, func(t *testing.T) {
			_, err := ParseNetworkCIDR("cidr", tc.cidr)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseNetworkCIDR(%q) = %v, want ok=%v", tc.cidr, err, tc.ok)
			}
		})
	}
}

func TestBuildNetwork(t *testing.T) {
	st := DefaultSettings()
	n, err := BuildNetwork(CreateNetworkRequest{Name: "a", CIDR: "10.10.0.0/24"}, st)
	if err != nil || n.Type != NetworkOverlay || n.MTU != 1390 || n.Gateway != "169.254.1.1" || n.DNS != "169.254.1.1" || n.Egress {
		t.Fatalf("overlay default: %+v %v", n, err)
	}
	n, err = BuildNetwork(CreateNetworkRequest{Name: "b", CIDR: "10.11.0.0/24", Type: NetworkLocal, Egress: true}, st)
	if err != nil || n.MTU != 1500 || !n.Egress {
		t.Fatalf("local: %+v %v", n, err)
	}
	if _, err := BuildNetwork(CreateNetworkRequest{Name: "c", CIDR: "10.12.0.0/24", MTU: 1400}, st); KindOf(err) != KindInvalid {
		t.Fatalf("overlay mtu above 1390: %v", err)
	}
	if n, err := BuildNetwork(CreateNetworkRequest{Name: "c", CIDR: "10.12.0.0/24", MTU: 1300}, st); err != nil || n.MTU != 1300 {
		t.Fatalf("smaller mtu: %+v %v", n, err)
	}
	if _, err := BuildNetwork(CreateNetworkRequest{Name: "d", CIDR: "100.87.128.0/24"}, st); !isCode(err, "network_overlap") {
		t.Fatalf("supernet overlap: %v", err)
	}
	if _, err := BuildNetwork(CreateNetworkRequest{Name: "e", CIDR: "10.13.0.0/24", Type: "vlan"}, st); KindOf(err) != KindInvalid {
		t.Fatalf("bad type: %v", err)
	}
	if _, err := BuildNetwork(CreateNetworkRequest{Name: "Bad", CIDR: "10.13.0.0/24"}, st); KindOf(err) != KindInvalid {
		t.Fatalf("bad name: %v", err)
	}
}

func isCode(err error, code string) bool {
	e, ok := err.(*Error)
	return ok && e.Code == code
}

func TestHostRangeAndStaticIP(t *testing.T) {
	n := &Network{Name: "n", CIDR: "10.10.0.0/29"}
	first, last := HostRange(n.Prefix())
	if first.String() != "10.10.0.1" || last.String() != "10.10.0.6" {
		t.Fatalf("host range %s..%s", first, last)
	}
	for ip, ok := range map[string]bool{"10.10.0.1": true, "10.10.0.6": true, "10.10.0.0": false,
		"10.10.0.7": false, "10.10.1.1": false, "x": false, "169.254.1.1": false} {
		if _, err := ValidateStaticIP("ip", n, ip); (err == nil) != ok {
			t.Errorf("ValidateStaticIP(%s) = %v", ip, err)
		}
	}
}

func TestMACs(t *testing.T) {
	a, b := NICMAC("vm1", 0), NICMAC("vm1", 1)
	if a == b || a != NICMAC("vm1", 0) || a[:3] != "02:" || len(a) != 17 {
		t.Fatalf("nic macs %s %s", a, b)
	}
	g := GatewayMAC("net1")
	if g != GatewayMAC("net1") || g[:3] != "06:" || g == GatewayMAC("net2") {
		t.Fatalf("gateway mac %s", g)
	}
}
