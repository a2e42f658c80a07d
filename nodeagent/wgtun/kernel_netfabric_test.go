//go:build netfabric

package wgtun

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/otherix/otherix/internal/netnstest"
)

// inFreshNS runs fn on a thread inside a new network namespace, removed at
// cleanup.
func inFreshNS(t *testing.T, fn func()) {
	t.Helper()
	netnstest.RequireRoot(t)
	netnstest.In(t, netnstest.New(t, "oxg", "tun"), fn)
}

// TestKernelTakesWrites: the kernel accepts each kind of write this device
// makes (a single packet, a UDP GSO packet). A UDP-tunnel GSO write (which
// would let a VXLAN TCP flow reach the bridge as one super-packet) is not
// among them: Linux 6.18 validates its offsets as if an Ethernet header came
// first (outer_th >= ETH_HLEN + 20), so an L3 TUN's writes are refused.
func TestKernelTakesWrites(t *testing.T) {
	inFreshNS(t, func() {
		d, err := Create("oxwgt0")
		if errors.Is(err, ErrUnsupported) {
			t.Skipf("this kernel: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		l, err := netlink.LinkByName("oxwgt0")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		for name, bufs := range map[string][][]byte{
			"single":  {udpPacket(1, 100)},
			"udp gso": {udpPacket(1, 1000), udpPacket(1, 1000), udpPacket(1, 300)},
		} {
			before := d.Stats()
			n, err := d.Write(bufs, 16)
			if err != nil || n != len(bufs) {
				t.Errorf("%s: wrote %d of %d: %v", name, n, len(bufs), err)
			}
			st := d.Stats()
			t.Logf("%s: %+v", name, st)
			if name == "udp gso" && st.CoalescedWrites != before.CoalescedWrites+1 {
				t.Errorf("%s: not coalesced: %+v", name, st)
			}
		}
	})
}
