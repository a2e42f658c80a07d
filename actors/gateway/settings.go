package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Settings answers the cluster settings document.
func (g *Gateway) Settings(ctx context.Context) (*messages.Settings, error) {
	s, err := g.st.Settings(ctx)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// maxSettingsAttempts bounds the re-reads of a settings change sent without
// a revision while networks keep being created.
const maxSettingsAttempts = 5

// UpdateSettings applies patch to the settings document after checking it
// against the cluster as it is (checkSettings): the nodes' host prefixes,
// the networks and the tunnel addresses. ifMatch, when not 0, is the
// document revision the caller read (409 revision_conflict at any other).
// A patch that changes nothing writes nothing. The change reaches agents
// with their next heartbeat (within heartbeatCacheTTL on other replicas);
// a moved supernet re-addresses each node at its next heartbeat.
func (g *Gateway) UpdateSettings(ctx context.Context, p messages.Principal, patch messages.SettingsPatch, ifMatch int64) (*messages.Settings, error) {
	for attempt := 1; ; attempt++ {
		v, err := g.st.ReadSettingsView(ctx)
		if err != nil {
			return nil, err
		}
		cur := v.Settings
		if ifMatch != 0 && ifMatch != cur.Revision {
			e := messages.ErrStaleRevision.WithDetail("current_revision", cur.Revision)
			e.Message = fmt.Sprintf("the settings are at revision %d, not %d; reload and retry", cur.Revision, ifMatch)
			return nil, e
		}
		next := patch.Apply(cur)
		if next == cur {
			return &cur, nil
		}
		if err := checkSettings(cur, next, v); err != nil {
			return nil, err
		}
		saved, err := g.st.UpdateSettings(ctx, v, next)
		if errors.Is(err, store.ErrSettingsRaced) && ifMatch == 0 && attempt < maxSettingsAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		g.hb.dropSettings()
		g.log.Info("cluster settings changed", "by", p.UserID, "overlay_supernet", saved.OverlaySupernet,
			"vni_range", fmt.Sprintf("%d-%d", saved.VNIRange.Min, saved.VNIRange.Max), "underlay_mtu", saved.UnderlayMTU,
			"wireguard_port", saved.WireGuardPort, "default_pool", saved.DefaultPool)
		g.id.Audit(messages.AuditEntry{Actor: p.UserID, Action: "settings.update", Target: "cluster", Result: "ok"})
		return &saved, nil
	}
}

// checkSettings refuses a settings change the cluster cannot take:
//   - an overlay supernet that overlaps a prefix any node reported its host
//     uses (the agent would refuse it anyway, and the node would lose its
//     data plane), overlaps a network, or is too small for the nodes that
//     hold tunnel addresses (they are re-addressed into it);
//   - a VNI range that leaves out an overlay network's VNI;
//   - an underlay MTU too small for a network's MTU.
func checkSettings(cur, next messages.Settings, v *store.SettingsView) error {
	if err := next.Validate(); err != nil {
		return err
	}
	if next.OverlaySupernet != cur.OverlaySupernet {
		sn, _ := messages.ParseSupernet("overlay_supernet", next.OverlaySupernet)
		for _, n := range v.Networks {
			if sn.Overlaps(n.Prefix()) {
				e := messages.ErrNetworkOverlap.WithDetail("network", n.Name).WithDetail("cidr", n.CIDR)
				e.Message = fmt.Sprintf("overlay supernet %s overlaps network %s (%s)", sn, n.Name, n.CIDR)
				return e
			}
		}
		holders := 0
		for _, n := range v.Nodes {
			if n.TunnelIP != "" {
				holders++
			}
			for _, hp := range n.Status.HostPrefixes {
				p, err := netip.ParsePrefix(hp.Prefix)
				if err == nil && sn.Overlaps(p) {
					return messages.SupernetHostConflict(sn.String(), n.Name, hp)
				}
			}
		}
		if hosts := 1<<(32-sn.Bits()) - 2; holders > hosts {
			e := messages.ErrSupernetTooSmall.WithDetail("nodes", holders).WithDetail("addresses", hosts)
			e.Message = fmt.Sprintf("overlay supernet %s has %d node addresses; %d nodes hold one", sn, hosts, holders)
			return e
		}
	}
	if next.VNIRange != cur.VNIRange {
		for _, n := range v.Networks {
			if n.Type == messages.NetworkOverlay && (n.VNI < next.VNIRange.Min || n.VNI > next.VNIRange.Max) {
				e := messages.ErrVNIRangeInUse.WithDetail("network", n.Name).WithDetail("vni", n.VNI)
				e.Message = fmt.Sprintf("network %s has vni %d, outside %d-%d", n.Name, n.VNI, next.VNIRange.Min, next.VNIRange.Max)
				return e
			}
		}
	}
	if next.UnderlayMTU != cur.UnderlayMTU {
		_, overlayMTU := messages.NetworkMTUs(next.UnderlayMTU)
		for _, n := range v.Networks {
			limit := next.UnderlayMTU
			if n.Type == messages.NetworkOverlay {
				limit = overlayMTU
			}
			if n.MTU > limit {
				e := messages.ErrUnderlayMTUInUse.WithDetail("network", n.Name).WithDetail("mtu", n.MTU)
				e.Message = fmt.Sprintf("network %s has mtu %d; an underlay mtu of %d leaves it %d", n.Name, n.MTU, next.UnderlayMTU, limit)
				return e
			}
		}
	}
	return nil
}

// checkNetworkHosts refuses a network whose CIDR overlaps a prefix a node
// reported its host uses: every node's agent would refuse its data plane
// once a VM on it landed there (its bridge route would capture the host's
// traffic). Networks are few and created rarely: reading every node is fine.
func (g *Gateway) checkNetworkHosts(ctx context.Context, n *messages.Network) error {
	p := n.Prefix()
	var found error
	err := listAll(ctx, func(pg store.Page) ([]*messages.Node, string, error) {
		if found != nil {
			return nil, "", nil
		}
		return store.List[messages.Node](ctx, g.st, store.Nodes, pg)
	}, func(node *messages.Node) {
		for _, hp := range node.Status.HostPrefixes {
			if t, err := netip.ParsePrefix(hp.Prefix); found == nil && err == nil && t.Overlaps(p) {
				found = messages.NetworkHostConflict(n.CIDR, node.Name, hp)
			}
		}
	})
	if err != nil {
		return err
	}
	return found
}

// dropSettings makes the next heartbeat read the settings again.
func (c *heartbeatCache) dropSettings() {
	c.mu.Lock()
	c.setUntil = time.Time{}
	c.mu.Unlock()
}
