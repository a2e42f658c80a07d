//go:build netfabric

package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/netnstest"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/netfabric"
)

// TestRunnerRefusesOverlayOverHostResolver replays issue 13 on a "host"
// namespace: its resolver (10.255.255.53) and default gateway sit inside
// the supernet the control plane sends (the old default 10.240.0.0/12).
// The runner, driven with the heartbeat's desired state, must refuse, leave
// every route, address and link as it was, and report the conflicts and
// the host's prefixes for the next heartbeat; EnsureNICs must fail with
// network_unavailable naming the collision.
func TestRunnerRefusesOverlayOverHostResolver(t *testing.T) {
	ns := netnstest.New(t, "oxo", "hc")
	netnstest.IP(t, "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	netnstest.IP(t, "-n", ns, "link", "set", "eth0", "up")
	netnstest.IP(t, "-n", ns, "link", "set", "eth1", "up")
	netnstest.IP(t, "-n", ns, "addr", "add", "10.250.0.2/16", "dev", "eth0")
	netnstest.IP(t, "-n", ns, "route", "add", "default", "via", "10.250.0.1")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.255.255.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fab, err := netfabric.New(netfabric.Options{Netns: filepath.Join("/var/run/netns", ns), WireGuard: netfabric.WireGuardUserspace,
		WireGuardIf: fmt.Sprintf("oxw%dhc", os.Getpid()%100000), KeyDir: t.TempDir(), ResolvConf: []string{resolv}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fab.Close() })
	r, err := New(Config{Fabric: fab, NICs: func() map[string][]messages.NICStatus { return nil }, NetworkWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	state := func() string {
		return netnstest.IP(t, "-n", ns, "-d", "link", "show") + netnstest.IP(t, "-n", ns, "addr", "show") +
			netnstest.IP(t, "-n", ns, "route", "show", "table", "all")
	}
	before := state()

	set := messages.DefaultSettings()
	set.OverlaySupernet = "10.240.0.0/12"
	r.SetDesired(messages.DesiredState{Settings: set, OverlayRevision: "r1", Overlay: &messages.DesiredOverlay{
		Revision: "r1", TunnelIP: "10.240.0.1", ListenPort: 51820,
		Networks: []messages.DesiredNetwork{{ID: "nw-hc", Name: "web", CIDR: "10.77.0.0/24", Type: "overlay", VNI: 4096, MTU: 1390}},
	}})
	if _, err := r.reconcile(context.Background()); !errors.Is(err, netfabric.ErrHostConflict) {
		t.Fatalf("reconcile: %v", err)
	}
	if after := state(); after != before {
		t.Fatalf("the host changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
	st := r.Status()
	if st.Reconciled || len(st.Conflicts) != 1 {
		t.Fatalf("status %+v", st)
	}
	want := messages.HostConflict{Prefix: "10.240.0.0/12", Use: "overlay supernet on " + fab.WireGuardIf(),
		Taken: "10.250.0.0/16", Source: "route dev eth0"}
	if st.Conflicts[0] != want {
		t.Fatalf("conflict %+v, want %+v", st.Conflicts[0], want)
	}
	hp := r.HostPrefixes()
	joined := fmt.Sprint(hp)
	for _, p := range []string{"10.250.0.0/16 route dev eth0", "10.250.0.1/32 gateway dev eth0", "10.250.0.2/32 address eth0",
		"10.255.255.53/32 resolver " + resolv} {
		if !strings.Contains(joined, "{"+p+"}") {
			t.Fatalf("host prefixes %v lack %q", hp, p)
		}
	}
	_, err = r.EnsureNICs(context.Background(), "vm-1", []messages.NICStatus{{NetworkID: "nw-hc", IP: "10.77.0.5", MAC: "52:54:00:00:00:05"}})
	if me := (*messages.Error)(nil); !errors.As(err, &me) || me.Code != "network_unavailable" || !strings.Contains(err.Error(), "overlaps 10.250.0.0/16") {
		t.Fatalf("ensure nics: %v", err)
	}
	if after := state(); after != before {
		t.Fatalf("the host changed after EnsureNICs")
	}
}
