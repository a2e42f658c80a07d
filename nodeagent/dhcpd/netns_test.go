//go:build netfabric

package dhcpd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"github.com/otherix/otherix/internal/netnstest"
)

// The test builds a node namespace whose bridge carries 169.254.1.1 and
// client namespaces on veths in that bridge; all traffic stays in them and
// cleanup deletes them.

// dhcpClient runs a DHCP exchange from eth0 in ns: the raw socket is made
// in ns on a thread that is thrown away afterwards.
func dhcpClient(t *testing.T, ns string, timeout time.Duration) (lease *nclient4.Lease, err error) {
	t.Helper()
	netnstest.In(t, ns, func() {
		var c *nclient4.Client
		if c, err = nclient4.New("eth0", nclient4.WithTimeout(timeout/3), nclient4.WithRetry(2)); err != nil {
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		lease, err = c.Request(ctx, dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionInterfaceMTU))
	})
	return lease, err
}

func TestResponderOnBridge(t *testing.T) {
	netnstest.RequireRoot(t)
	node := netnstest.New(t, "oxh", "node")
	netnstest.IP(t, "-n", node, "link", "add", "br0", "type", "bridge")
	netnstest.IP(t, "-n", node, "addr", "add", "169.254.1.1/32", "dev", "br0")
	netnstest.IP(t, "-n", node, "link", "set", "br0", "up")
	netnstest.IP(t, "-n", node, "route", "add", "10.60.0.0/24", "dev", "br0")
	macs := []string{"02:aa:bb:cc:dd:01", "02:aa:bb:cc:dd:02", "02:aa:bb:cc:dd:03"}
	clients := make([]string, len(macs))
	for i, mac := range macs {
		clients[i] = netnstest.New(t, "oxh", fmt.Sprintf("c%d", i+1))
		tap := fmt.Sprintf("c%d", i+1)
		netnstest.IP(t, "-n", node, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", clients[i])
		netnstest.IP(t, "-n", node, "link", "set", tap, "master", "br0", "up")
		netnstest.IP(t, "-n", clients[i], "link", "set", "eth0", "address", mac, "mtu", "1500", "up")
	}
	// A second bridge with its own responder must not answer br0's clients.
	netnstest.IP(t, "-n", node, "link", "add", "br1", "type", "bridge")
	netnstest.IP(t, "-n", node, "addr", "add", "169.254.1.1/32", "dev", "br1")
	netnstest.IP(t, "-n", node, "link", "set", "br1", "up")

	lease := func(mac string, ip string) Lease {
		m, _ := net.ParseMAC(mac)
		return Lease{MAC: m, IP: netip.MustParseAddr(ip), PrefixLen: 24, MTU: 1390}
	}
	path := filepath.Join("/var/run/netns", node)
	srv, err := Start(Config{Interface: "br0", Netns: path}, []Lease{lease(macs[0], "10.60.0.5")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	other, err := Start(Config{Interface: "br1", Netns: path}, []Lease{lease(macs[1], "10.70.0.9")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })

	t.Run("known mac", func(t *testing.T) {
		l, err := dhcpClient(t, clients[0], 6*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		checkConfig(t, l.ACK, "10.60.0.5", 24, 1390)
		if l.ACK.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("got %s", l.ACK.MessageType())
		}
	})
	t.Run("unknown mac", func(t *testing.T) {
		// Known only on br1's responder, which must not hear br0.
		if l, err := dhcpClient(t, clients[1], 2*time.Second); err == nil {
			t.Fatalf("an unknown mac got a lease: %s", l.ACK.Summary())
		}
	})
	t.Run("table update", func(t *testing.T) {
		if err := srv.SetLeases([]Lease{lease(macs[0], "10.60.0.5"), lease(macs[2], "10.60.0.77")}); err != nil {
			t.Fatal(err)
		}
		l, err := dhcpClient(t, clients[2], 6*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		checkConfig(t, l.ACK, "10.60.0.77", 24, 1390)
	})
}
