package images

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// deniedByDefault are the destinations a root daemon on the management
// network must not fetch from on a tenant's behalf unless the operator
// allows them: the host itself, link-local (cloud metadata services such as
// 169.254.169.254 and the VMs' anycast gateway), unspecified, multicast,
// broadcast and reserved space. The host's own addresses are denied too
// (destPolicy.localAddrs). Private ranges are allowed: mirrors on the
// operator's network are the normal case.
var deniedByDefault = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"), // reserved, and 255.255.255.255
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
	// NAT64 and 6to4 embed an IPv4 address the check above would not see.
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2002::/16"),
}

// destPolicy decides which addresses downloads may connect to. It is
// consulted on every dial, after name resolution, so DNS answers that
// change (rebinding) and redirects are judged by the address really used.
type destPolicy struct {
	allow []netip.Prefix // operator exceptions, checked first
	// localAddrs lists this host's own addresses: a service bound to all
	// interfaces is as reachable through them as through loopback. nil
	// means the interfaces' addresses, read on each dial (a netlink dump,
	// cheap next to a download).
	localAddrs func() []netip.Addr

	mu      sync.RWMutex
	cluster []netip.Prefix // the overlay supernet and the networks' CIDRs
}

// refusedError is a dial the policy refused.
type refusedError struct {
	addr   netip.Addr
	prefix netip.Prefix
	local  bool // addr is one of this host's own addresses
}

func (e *refusedError) Error() string {
	if e.local {
		return fmt.Sprintf("%s is an address of this host", e.addr)
	}
	return fmt.Sprintf("%s is in the denied range %s", e.addr, e.prefix)
}

// check returns a *refusedError if addr may not be dialled.
func (p *destPolicy) check(addr netip.Addr) error {
	addr = addr.Unmap().WithZone("")
	for _, a := range p.allow {
		if a.Contains(addr) {
			return nil
		}
	}
	for _, d := range deniedByDefault {
		if d.Contains(addr) {
			return &refusedError{addr: addr, prefix: d}
		}
	}
	p.mu.RLock()
	cluster := p.cluster
	p.mu.RUnlock()
	for _, d := range cluster {
		if d.Contains(addr) {
			return &refusedError{addr: addr, prefix: d}
		}
	}
	local := p.localAddrs
	if local == nil {
		local = interfaceAddrs
	}
	for _, a := range local() {
		if a == addr {
			return &refusedError{addr: addr, prefix: netip.PrefixFrom(a, a.BitLen()), local: true}
		}
	}
	return nil
}

// interfaceAddrs lists the addresses of this host's interfaces.
func interfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

func (p *destPolicy) setCluster(prefixes []netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cluster = slices.Clone(prefixes)
}

// control runs between socket creation and connect, with the resolved
// address: nothing is sent to a refused destination.
func (p *destPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("images: unexpected dial address %q: %w", address, err)
	}
	return p.check(ap.Addr())
}

// newHTTPClient is the download client: dial, TLS and response-header
// timeouts but no overall timeout (a large image on a slow link may take
// hours; the stall watchdog catches hangs), every connection checked by
// policy. There is no proxy: through one, the address fetched is the
// proxy's business and could not be checked here.
func newHTTPClient(p *destPolicy) *http.Client {
	d := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errTooManyRedirects
			}
			return nil
		},
	}
}

// ParseCIDRs reads a comma-separated list of CIDRs (a bare address is a
// single host), as --image-allow takes them.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitComma(s) {
		if p, err := netip.ParsePrefix(f); err == nil {
			if p != p.Masked() {
				return nil, fmt.Errorf("%s has host bits set (did you mean %s?)", f, p.Masked())
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an IP address", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
