package dnsfwd

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
)

// loopback4 holds the loopback stubs (127.0.0.53 of systemd-resolved, a
// local dnsmasq) used only when resolv.conf names nothing else.
var loopback4 = netip.MustParsePrefix("127.0.0.0/8")

// parseResolvConf returns the upstream resolvers of a resolv.conf, on port
// 53, skipping self (the forwarder's own address: relaying to it would
// loop) and loopback addresses unless they are all there is.
func parseResolvConf(data []byte, self netip.Addr) []netip.AddrPort {
	var remote, loop []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		a = a.Unmap()
		if a == self || a.IsUnspecified() {
			continue
		}
		ap := netip.AddrPortFrom(a, 53)
		if loopback4.Contains(a) || a.IsLoopback() {
			loop = append(loop, ap)
			continue
		}
		remote = append(remote, ap)
	}
	if len(remote) == 0 {
		return loop
	}
	return remote
}

// readResolvConf reads the upstream resolvers from path.
func readResolvConf(path string, self netip.Addr) ([]netip.AddrPort, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ups := parseResolvConf(data, self)
	if len(ups) == 0 {
		return nil, ErrNoUpstream
	}
	return ups, nil
}
