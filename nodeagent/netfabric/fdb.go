package netfabric

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// reconcileFDB writes each overlay network's VXLAN forwarding database: the
// static VM MAC → remote tunnel IP entries and the all-zero flood entries,
// removing every other remote entry (learning is off, so any other entry is
// stale).
func (f *Fabric) reconcileFDB(_ context.Context, p *plan, rep *Report) error {
	byName := p.links // kept current by reconcileLinks
	// One dump of the whole bridge FDB: a dump filtered by device still
	// walks every entry in the kernel, so one per network costs O(n²).
	neighs, err := f.nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list fdb: %w", err)
	}
	byLink := map[int][]netlink.Neigh{}
	for _, n := range neighs {
		byLink[n.LinkIndex] = append(byLink[n.LinkIndex], n)
	}
	var errs []error
	for i := range p.networks {
		np := &p.networks[i]
		if np.vxlan == "" {
			continue
		}
		l := byName[np.vxlan]
		if l == nil {
			continue // creation failed and was reported by reconcileLinks
		}
		if err := f.syncFDB(l, byLink[l.Attrs().Index], np, rep); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", np.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (f *Fabric) syncFDB(l netlink.Link, neighs []netlink.Neigh, np *netPlan, rep *Report) error {
	idx := l.Attrs().Index
	have := map[string]bool{}
	for _, n := range neighs {
		// Only the VXLAN device's own remote entries; the bridge's entries
		// for the port (NTF_MASTER) belong to the bridge.
		if n.Flags&netlink.NTF_SELF == 0 || n.IP == nil || n.LinkIndex != idx {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		key := n.HardwareAddr.String() + "|" + ip.Unmap().String()
		if _, ok := np.fdb[key]; ok {
			have[key] = true
			continue
		}
		del := n
		if err := f.nl.NeighDel(&del); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete fdb %s dst %s on %s: %w", n.HardwareAddr, ip, np.vxlan, err)
		}
		rep.add("delete fdb %s dst %s on %s", n.HardwareAddr, ip, np.vxlan)
	}
	for key, e := range np.fdb {
		if have[key] {
			continue
		}
		mac, err := net.ParseMAC(e.mac)
		if err != nil {
			return err
		}
		n := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			State:        netlink.NUD_PERMANENT | netlink.NUD_NOARP,
			Flags:        netlink.NTF_SELF,
			IP:           net.IP(e.remote.AsSlice()),
			HardwareAddr: mac,
		}
		// Append: the flood MAC has one entry per remote.
		if err := f.nl.NeighAppend(n); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add fdb %s dst %s on %s: %w", mac, e.remote, np.vxlan, err)
		}
		rep.add("add fdb %s dst %s on %s", mac, e.remote, np.vxlan)
	}
	return nil
}
