// Package hostroutes finds the IPv4 prefixes a host already uses, so the
// agent never installs an address or a route over them: an overlay route
// that swallows the host's resolver, gateway or management network cuts the
// host off (issue 13: a 10.240.0.0/12 mesh captured the resolver
// 10.255.255.53). What counts as taken: every address of a link the agent
// does not own, every route through one (all tables but "local", the default
// route aside, whose gateway counts instead), the nameservers of the
// resolv.conf files (the stub's and systemd-resolved's upstream list), and
// whatever the caller adds (the control plane's address).
package hostroutes

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultResolvConf are the files whose nameservers are taken: the one libc
// reads and, on hosts with systemd-resolved, its list of upstream servers
// (/etc/resolv.conf then names only the 127.0.0.53 stub). A missing file is
// skipped.
var DefaultResolvConf = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// Entry is one taken prefix and where it comes from.
type Entry struct {
	Prefix netip.Prefix
	// Source is for people: "route dev eth0", "address eth0", "gateway dev
	// eth0", "resolver /etc/resolv.conf", "control plane".
	Source string
}

func (e Entry) String() string { return e.Prefix.String() + " (" + e.Source + ")" }

// Options say what to gather.
type Options struct {
	// ResolvConf are the resolv.conf files to read; nil means
	// DefaultResolvConf.
	ResolvConf []string
	// Owned reports links the agent owns: their addresses and routes are
	// its own, not the host's.
	Owned func(link string) bool
	// Extra are taken prefixes the caller knows of, such as the control
	// plane's address.
	Extra []Entry
}

// Gather lists the taken IPv4 prefixes of the namespace h is bound to.
func Gather(h *netlink.Handle, o Options) ([]Entry, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("hostroutes: list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	owned := func(idx int) bool { return o.Owned != nil && idx != 0 && o.Owned(names[idx]) }
	out := slices.Clone(o.Extra)
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("hostroutes: list addresses: %w", err)
	}
	for _, a := range addrs {
		if owned(a.LinkIndex) {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, Entry{netip.PrefixFrom(ip.Unmap(), 32), "address " + names[a.LinkIndex]})
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("hostroutes: list routes: %w", err)
	}
	for _, r := range routes {
		out = append(out, routeEntries(r, names, owned)...)
	}
	paths := o.ResolvConf
	if paths == nil {
		paths = DefaultResolvConf
	}
	for _, p := range paths {
		ns, err := Resolvers(p)
		if err != nil {
			return nil, err
		}
		for _, a := range ns {
			out = append(out, Entry{netip.PrefixFrom(a, 32), "resolver " + p})
		}
	}
	return dedupe(out), nil
}

// routeEntries is what one route takes: its destination (the default route
// excepted: it overlaps everything and says nothing) and its gateways.
func routeEntries(r netlink.Route, names map[int]string, owned func(int) bool) []Entry {
	switch r.Table {
	case unix.RT_TABLE_LOCAL:
		return nil // the host's own addresses and broadcasts: listed as addresses
	}
	switch r.Type {
	case unix.RTN_UNICAST, unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_THROW:
	default:
		return nil
	}
	if owned(r.LinkIndex) {
		return nil
	}
	dev := ""
	if n := names[r.LinkIndex]; n != "" {
		dev = " dev " + n
	}
	table := ""
	if r.Table != unix.RT_TABLE_MAIN && r.Table != 0 {
		table = fmt.Sprintf(" table %d", r.Table)
	}
	var out []Entry
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if p, ok := PrefixOf(r.Dst); ok {
		dst = p
	}
	if dst.Bits() > 0 {
		out = append(out, Entry{dst.Masked(), "route" + dev + table})
	}
	gw := func(ip net.IP, link int) {
		if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap().Is4() {
			d := dev
			if link != 0 && names[link] != "" {
				d = " dev " + names[link]
			}
			out = append(out, Entry{netip.PrefixFrom(a.Unmap(), 32), "gateway" + d + table})
		}
	}
	gw(r.Gw, 0)
	for _, nh := range r.MultiPath {
		gw(nh.Gw, nh.LinkIndex)
	}
	return out
}

// Resolvers reads the IPv4 nameservers of a resolv.conf; a missing file
// has none.
func Resolvers(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hostroutes: %w", err)
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// An IPv6 resolver with a zone ("fe80::1%eth0") is not ours to
		// worry about: the overlay is IPv4.
		if a, err := netip.ParseAddr(fields[1]); err == nil && a.Unmap().Is4() {
			out = append(out, a.Unmap())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("hostroutes: read %s: %w", path, err)
	}
	return out, nil
}

// dedupe sorts entries broadest first and keeps one per prefix (the first
// source seen).
func dedupe(es []Entry) []Entry {
	slices.SortStableFunc(es, compare)
	return slices.CompactFunc(es, func(a, b Entry) bool { return a.Prefix == b.Prefix })
}

func compare(a, b Entry) int {
	return cmp.Or(cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()), a.Prefix.Addr().Compare(b.Prefix.Addr()))
}

// Compact bounds a list for the heartbeat: when it is longer than max, the
// entries inside a broader one go first (they add nothing to an overlap
// check), then the narrowest.
func Compact(es []Entry, max int) []Entry {
	es = dedupe(slices.Clone(es))
	if len(es) <= max {
		return es
	}
	var kept []Entry
	for _, e := range es {
		if !slices.ContainsFunc(kept, func(k Entry) bool { return k.Prefix.Contains(e.Prefix.Addr()) }) {
			kept = append(kept, e)
		}
	}
	if len(kept) > max {
		kept = kept[:max]
	}
	return kept
}

// Claim is a prefix the agent is about to install.
type Claim struct {
	Prefix netip.Prefix
	// Use says what for, for people: "overlay supernet on oxwg0".
	Use string
	// AddressOnly marks a /32 address that brings no route with it (the
	// anycast gateway on each bridge): it takes over only traffic to that
	// very address, so it collides only with an entry naming exactly it,
	// not with a subnet around it (hosts often route 169.254.0.0/16).
	AddressOnly bool
}

// Conflict is a claim that overlaps a taken prefix.
type Conflict struct {
	Claim Claim
	Taken Entry
}

func (c Conflict) String() string {
	return c.Claim.Use + " " + c.Claim.Prefix.String() + " overlaps " + c.Taken.String()
}

// Check lists every claim that overlaps a taken prefix, each with the first
// (broadest) entry it overlaps.
func Check(claims []Claim, taken []Entry) []Conflict {
	var out []Conflict
	for _, c := range claims {
		for _, t := range taken {
			hit := c.Prefix.Overlaps(t.Prefix)
			if c.AddressOnly {
				hit = t.Prefix.Bits() == 32 && t.Prefix.Addr() == c.Prefix.Addr()
			}
			if hit {
				out = append(out, Conflict{Claim: c, Taken: t})
				break
			}
		}
	}
	return out
}

// PrefixOf converts a netlink address or route destination; false for nil
// or a malformed one. IPv4-mapped addresses come out as IPv4.
func PrefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
