//go:build etcd

package gateway_test

import (
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

func ptr[T any](v T) *T { return &v }

// overlayBeat is a heartbeat from a node with a data plane whose host uses
// taken, and whose last reconcile refused conflicts.
func overlayBeat(key byte, taken []messages.HostPrefix, conflicts ...messages.HostConflict) messages.Heartbeat {
	hb := observed(2)
	k := make([]byte, 32)
	k[0] = key
	hb.Overlay = &messages.NodeOverlay{PublicKey: base64.StdEncoding.EncodeToString(k), Endpoint: "192.0.2.1:51820",
		WireGuard: "userspace", Reconciled: len(conflicts) == 0, Conflicts: conflicts}
	hb.HostPrefixes = taken
	return hb
}

func hbeat(t *testing.T, g *gateway.Gateway, cert *x509.Certificate, hb messages.Heartbeat) *messages.HeartbeatResponse {
	t.Helper()
	resp, err := g.Heartbeat(t.Context(), cert, hb)
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	return resp
}

// TestSettingsCheckedAgainstCluster drives settings changes against a real
// store with nodes that reported their host prefixes: a supernet over a
// node's resolver, over a network, a VNI range or underlay MTU that leaves
// out a network are refused with their codes and change nothing; a clear
// change is written, reaches the next heartbeat, and re-addresses the node
// into the new supernet.
func TestSettingsCheckedAgainstCluster(t *testing.T) {
	g, st := startNodes(t, testutil.NewClock(time.Now()))
	ctx := t.Context()
	taken := []messages.HostPrefix{{Prefix: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"},
		{Prefix: "192.168.7.0/24", Source: "route dev eth0"}}
	n1, cert1 := enrollNode(t, g, "n1")
	hbeat(t, g, cert1, overlayBeat(1, taken))
	resp := hbeat(t, g, cert1, overlayBeat(1, taken))
	if resp.Desired.Overlay == nil || resp.Desired.Overlay.TunnelIP != "100.87.0.1" || resp.Desired.Overlay.ListenPort != 51820 ||
		resp.Desired.Settings.OverlaySupernet != "100.87.0.0/16" {
		t.Fatalf("desired before: %+v", resp.Desired)
	}
	cur, err := g.Settings(ctx)
	if err != nil || cur.OverlaySupernet != messages.DefaultOverlaySupernet || cur.WireGuardPort != 51820 {
		t.Fatalf("settings %+v %v", cur, err)
	}
	if _, err := g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "web", CIDR: "10.50.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	// A network over a node's LAN would be refused by that node's agent:
	// the control plane refuses it first.
	_, err = g.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "lan", CIDR: "192.168.7.0/25"})
	if e := wantCode(t, err, "network_host_conflict"); !strings.Contains(e.Message, "192.168.7.0/24 (route dev eth0) on node n1") {
		t.Fatalf("network over a node's lan: %v", e)
	}
	refused := []struct {
		name  string
		patch messages.SettingsPatch
		code  string
		says  string
	}{
		{"supernet over a node's resolver", messages.SettingsPatch{OverlaySupernet: ptr("10.240.0.0/12")}, "supernet_host_conflict",
			"overlay supernet 10.240.0.0/12 overlaps 10.255.255.53/32 (resolver /etc/resolv.conf) on node n1"},
		{"supernet over a node's lan", messages.SettingsPatch{OverlaySupernet: ptr("192.168.0.0/16")}, "supernet_host_conflict",
			"192.168.7.0/24 (route dev eth0) on node n1"},
		{"supernet over a network", messages.SettingsPatch{OverlaySupernet: ptr("10.48.0.0/12")}, "network_overlap", "network web (10.50.0.0/24)"},
		{"vni range without the network's", messages.SettingsPatch{VNIRange: &messages.VNIRange{Min: 5000, Max: 6000}}, "vni_range_in_use", "network web has vni 4096"},
		{"underlay mtu too small", messages.SettingsPatch{UnderlayMTU: ptr(1400)}, "underlay_mtu_in_use", "network web has mtu 1390"},
		{"invalid supernet", messages.SettingsPatch{OverlaySupernet: ptr("100.87.0.0/30")}, "invalid_field", "overlay_supernet"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			_, err := g.UpdateSettings(ctx, adminPrincipal, c.patch, 0)
			e := wantCode(t, err, c.code)
			if !strings.Contains(e.Error(), c.says) && !strings.Contains(e.Error()+" "+fieldOf(e), c.says) {
				t.Fatalf("%s: %q lacks %q", c.code, e.Error(), c.says)
			}
			if now, _ := g.Settings(ctx); now.Revision != cur.Revision {
				t.Fatalf("a refused change wrote the settings: %+v", now)
			}
		})
	}
	if e := wantCode(t, mustErr(g.UpdateSettings(ctx, adminPrincipal, messages.SettingsPatch{OverlaySupernet: ptr("10.240.0.0/12")}, 0)),
		"supernet_host_conflict"); e.Details["node"] != "n1" || e.Details["prefix"] != "10.255.255.53/32" {
		t.Fatalf("details %+v", e.Details)
	}

	next, err := g.UpdateSettings(ctx, adminPrincipal, messages.SettingsPatch{OverlaySupernet: ptr("100.88.0.0/16"), WireGuardPort: ptr(51821)}, cur.Revision)
	if err != nil || next.OverlaySupernet != "100.88.0.0/16" || next.WireGuardPort != 51821 || next.Revision == cur.Revision {
		t.Fatalf("clear change: %+v %v", next, err)
	}
	wantCode(t, mustErr(g.UpdateSettings(ctx, adminPrincipal, messages.SettingsPatch{UnderlayMTU: ptr(1450)}, cur.Revision)), "revision_conflict")
	if same, err := g.UpdateSettings(ctx, adminPrincipal, messages.SettingsPatch{WireGuardPort: ptr(51821)}, 0); err != nil || same.Revision != next.Revision {
		t.Fatalf("no-op change: %+v %v", same, err)
	}
	resp = hbeat(t, g, cert1, overlayBeat(1, taken))
	o := resp.Desired.Overlay
	if o == nil || o.TunnelIP != "100.88.0.1" || o.ListenPort != 51821 || resp.Desired.Settings.OverlaySupernet != "100.88.0.0/16" {
		t.Fatalf("desired after the change: %+v", resp.Desired)
	}
	if _, err := st.TunnelIPOwner(ctx, "100.87.0.1"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("old tunnel ip still held: %v", err)
	}
	if owner, err := st.TunnelIPOwner(ctx, "100.88.0.1"); err != nil || owner != n1.ID {
		t.Fatalf("new tunnel ip owner %q %v", owner, err)
	}
}

// TestHostConflictConditionThroughGateway: a node whose agent refused its
// data plane shows HostNetworkConflict, read back through the gateway as
// the API serves it.
func TestHostConflictConditionThroughGateway(t *testing.T) {
	g, _ := startNodes(t, testutil.NewClock(time.Now()))
	_, cert := enrollNode(t, g, "n1")
	conflict := messages.HostConflict{Prefix: "10.240.0.0/12", Use: "overlay supernet on oxwg0", Taken: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}
	hbeat(t, g, cert, overlayBeat(1, nil, conflict))
	n := nodePhase(t, g, "n1")
	if len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Type != messages.NodeConditionHostNetworkConflict ||
		n.Status.Conditions[0].Status != "True" || !strings.Contains(n.Status.Conditions[0].Message, conflict.String()) ||
		n.Status.Overlay == nil || len(n.Status.Overlay.Conflicts) != 1 {
		t.Fatalf("node %+v", n.Status)
	}
	// A bad report is refused at the door.
	hb := overlayBeat(1, []messages.HostPrefix{{Prefix: "not-a-prefix", Source: "x"}})
	if _, err := g.Heartbeat(t.Context(), cert, hb); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("malformed host prefix: %v", err)
	}
}

func mustErr(_ any, err error) error { return err }

func fieldOf(e *messages.Error) string {
	f, _ := e.Details["field"].(string)
	return f
}
