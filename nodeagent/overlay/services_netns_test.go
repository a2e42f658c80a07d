//go:build netfabric

package overlay

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/miekg/dns"

	"github.com/otherix/otherix/messages"

	"github.com/otherix/otherix/internal/netnstest"
)

func TestRunnerStartsNodeServices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	ul := netnstest.New(t, "oxo", "sul")
	netnstest.IP(t, "-n", ul, "link", "add", "br0", "type", "bridge")
	netnstest.IP(t, "-n", ul, "link", "set", "br0", "up")
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	// An upstream the node has no route to: the forwarder answers SERVFAIL.
	if err := os.WriteFile(rc, []byte("nameserver 192.0.2.99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := "oxo-" + itoa(os.Getpid()) + "-s"
	svc := NewNodeServices(NodeServicesConfig{Netns: filepath.Join("/var/run/netns", ns), ResolvConf: rc})
	n := startNode(t, ul, "s", netip.MustParseAddr("192.168.78.1"), "10.241.0.1", svc)
	if n.ns != ns {
		t.Fatalf("node namespace %s, want %s", n.ns, ns)
	}
	const mac = "52:54:00:0c:00:01"
	network := messages.DesiredNetwork{ID: "nw-svc", Name: "svc", CIDR: "10.11.0.0/24", Type: "local", MTU: 1400}
	n.runner.SetDesired(messages.DesiredState{Settings: messages.DefaultSettings(), Overlay: &messages.DesiredOverlay{
		Networks: []messages.DesiredNetwork{network}}})
	taps, err := n.runner.EnsureNICs(context.Background(), "vm-s", []messages.NICStatus{{NetworkID: network.ID, IP: "10.11.0.7", PrefixLen: 24, MAC: mac}})
	if err != nil {
		t.Fatal(err)
	}
	ep := endpoint(t, n, "es", taps[0], mac, "10.11.0.7/24")

	var lease *nclient4.Lease
	netnstest.In(t, ep, func() {
		c, cerr := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
		if cerr != nil {
			err = cerr
			return
		}
		defer c.Close()
		lease, err = c.Request(context.Background())
	})
	if err != nil {
		t.Fatalf("dhcp: %v", err)
	}
	if ip := lease.ACK.YourIPAddr.String(); ip != "10.11.0.7" {
		t.Fatalf("dhcp address %s", ip)
	}
	if m := lease.ACK.GetOneOption(dhcpv4.OptionInterfaceMTU); len(m) != 2 || int(m[0])<<8|int(m[1]) != 1400 {
		t.Fatalf("dhcp mtu %v", m)
	}

	var r *dns.Msg
	netnstest.In(t, ep, func() {
		q := new(dns.Msg)
		q.SetQuestion("x.test.", dns.TypeA)
		r, _, err = (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, "169.254.1.1:53")
	})
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("dns through the forwarder: %v %v", r, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
