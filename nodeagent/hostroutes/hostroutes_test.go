package hostroutes

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestResolvers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	body := "# comment\nsearch example\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nnameserver ::ffff:192.0.2.1\noptions edns0\nnameserver\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Resolvers(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.255.255.53"), netip.MustParseAddr("192.0.2.1")}
	if !slices.Equal(got, want) {
		t.Fatalf("resolvers %v, want %v", got, want)
	}
	if got, err := Resolvers(filepath.Join(t.TempDir(), "missing")); err != nil || got != nil {
		t.Fatalf("missing file: %v %v", got, err)
	}
}

func TestCheck(t *testing.T) {
	taken := dedupe([]Entry{
		{pfx("10.255.255.53/32"), "resolver /etc/resolv.conf"},
		{pfx("192.168.1.0/24"), "route dev eth0"},
		{pfx("192.168.1.10/32"), "address eth0"},
		{pfx("169.254.0.0/16"), "route dev eth0"},
		{pfx("203.0.113.7/32"), "control plane"},
	})
	cases := []struct {
		name  string
		claim Claim
		want  string // the taken prefix, "" for none
	}{
		{"old default supernet swallows the resolver", Claim{Prefix: pfx("10.240.0.0/12"), Use: "overlay supernet"}, "10.255.255.53/32"},
		{"new default is clear", Claim{Prefix: pfx("100.87.0.0/16"), Use: "overlay supernet"}, ""},
		{"network inside the lan", Claim{Prefix: pfx("192.168.1.128/25"), Use: "network"}, "192.168.1.0/24"},
		{"network around the lan", Claim{Prefix: pfx("192.168.0.0/16"), Use: "network"}, "192.168.1.0/24"},
		{"control plane", Claim{Prefix: pfx("203.0.113.0/24"), Use: "network"}, "203.0.113.7/32"},
		{"anycast inside a link-local route is fine", Claim{Prefix: pfx("169.254.1.1/32"), Use: "anycast", AddressOnly: true}, ""},
		{"anycast on the host's own address", Claim{Prefix: pfx("192.168.1.10/32"), Use: "anycast", AddressOnly: true}, "192.168.1.10/32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Check([]Claim{c.claim}, taken)
			switch {
			case c.want == "" && len(got) != 0:
				t.Fatalf("conflicts %v, want none", got)
			case c.want != "" && (len(got) != 1 || got[0].Taken.Prefix != pfx(c.want)):
				t.Fatalf("conflicts %v, want one with %s", got, c.want)
			}
		})
	}
}

func TestCompact(t *testing.T) {
	var es []Entry
	for i := range 300 {
		es = append(es, Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32), "address"})
	}
	es = append(es, Entry{pfx("10.1.0.0/16"), "route"}, Entry{pfx("192.0.2.0/24"), "route"}, Entry{pfx("192.0.2.0/24"), "dup"})
	if got := Compact(es[len(es)-3:], 10); len(got) != 2 {
		t.Fatalf("short list: %v", got)
	}
	got := Compact(es, 256)
	if len(got) != 2 || got[0].Prefix != pfx("10.1.0.0/16") || got[1].Prefix != pfx("192.0.2.0/24") || got[1].Source != "route" {
		t.Fatalf("compact: %v", got)
	}
	// Nothing to fold: the narrowest go.
	var wide []Entry
	for i := range 300 {
		wide = append(wide, Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), "route"})
	}
	wide = append(wide, Entry{pfx("172.16.0.0/12"), "route"})
	got = Compact(wide, 256)
	if len(got) != 256 || got[0].Prefix != pfx("172.16.0.0/12") {
		t.Fatalf("compact wide: %d entries, first %v", len(got), got[0])
	}
}
