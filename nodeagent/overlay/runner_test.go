package overlay

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/hostroutes"
	"github.com/otherix/otherix/nodeagent/netfabric"
)

// fakeFabric records every Desired it is given.
type fakeFabric struct {
	mu    sync.Mutex
	calls []netfabric.Desired
	err   error
	// rep, if set, is what Reconcile reports.
	rep *netfabric.Report
}

func (f *fakeFabric) Reconcile(_ context.Context, d netfabric.Desired) (netfabric.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, d)
	if f.rep != nil {
		return *f.rep, f.err
	}
	return netfabric.Report{Changes: 1, Actions: []string{"x"}, WireGuard: "userspace", TunnelOffload: true}, f.err
}
func (f *fakeFabric) PublicKey() string { return "pub" }
func (f *fakeFabric) TapName(n netfabric.NIC) string {
	return "tap-" + n.VMID + "-" + string(rune('0'+n.Index))
}
func (f *fakeFabric) last() (netfabric.Desired, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return netfabric.Desired{}, 0
	}
	return f.calls[len(f.calls)-1], len(f.calls)
}

func desired() messages.DesiredState {
	return messages.DesiredState{
		Settings:        messages.DefaultSettings(),
		OverlayRevision: "rev-1",
		Overlay: &messages.DesiredOverlay{
			Revision: "rev-1", TunnelIP: "100.87.0.1", ListenPort: 51999,
			Networks: []messages.DesiredNetwork{{ID: "nw-1", Name: "net1", CIDR: "10.10.0.0/24", Type: "overlay", VNI: 4096, MTU: 1390,
				GatewayMAC: "02:11:22:33:44:55"}},
			Peers: []messages.DesiredPeer{{Node: "n2", PublicKey: "k2", Endpoint: "192.0.2.2:51820", TunnelIP: "100.87.0.2"}},
			FDB:   []messages.DesiredFDBEntry{{Network: "nw-1", MAC: "52:54:00:00:00:02", Remote: "100.87.0.2"}},
		},
	}
}

func TestRunner(t *testing.T) {
	fab := &fakeFabric{}
	var mu sync.Mutex
	vmNICs := map[string][]messages.NICStatus{
		"vm-a": {{NetworkID: "nw-1", IP: "10.10.0.5", PrefixLen: 24, MAC: "52:54:00:00:00:05"}},
		// A NIC on a network that is not (or no longer) on the node is
		// left out rather than failing the reconcile.
		"vm-gone": {{NetworkID: "nw-9", IP: "10.90.0.5", PrefixLen: 24, MAC: "52:54:00:00:00:09"}},
	}
	r, err := New(Config{Fabric: fab, UnderlayIP: netip.MustParseAddr("192.0.2.1"), WireGuard: "auto",
		NICs: func() map[string][]messages.NICStatus {
			mu.Lock()
			defer mu.Unlock()
			out := map[string][]messages.NICStatus{}
			for k, v := range vmNICs {
				out[k] = v
			}
			return out
		}, NetworkWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	st := r.Status()
	if st.PublicKey != "pub" || st.Endpoint != "192.0.2.1:51820" || st.Reconciled || st.WireGuard == "" {
		t.Fatalf("status before any desired state: %+v", st)
	}
	// Nothing happens before the control plane sends an overlay.
	r.SetDesired(messages.DesiredState{Settings: messages.DefaultSettings()})
	time.Sleep(20 * time.Millisecond)
	if _, n := fab.last(); n != 0 {
		t.Fatal("reconciled without a desired overlay")
	}

	t.Run("heartbeat desired state is applied with the vms' nics", func(t *testing.T) {
		r.SetDesired(desired())
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "a reconcile", func() bool { _, n := fab.last(); return n > 0 })
		d, _ := fab.last()
		if d.TunnelIP != netip.MustParsePrefix("100.87.0.1/16") || d.ListenPort != 51999 || d.WireGuardMTU != 1440 {
			t.Errorf("tunnel %s port %d wireguard mtu %d", d.TunnelIP, d.ListenPort, d.WireGuardMTU)
		}
		if len(d.Networks) != 1 || d.Networks[0].VNI != 4096 || d.Networks[0].GatewayMAC.String() != "02:11:22:33:44:55" {
			t.Errorf("networks %+v", d.Networks)
		}
		if len(d.Peers) != 1 || d.Peers[0].Endpoint.String() != "192.0.2.2:51820" || d.Peers[0].TunnelIP.String() != "100.87.0.2" {
			t.Errorf("peers %+v", d.Peers)
		}
		if len(d.FDB) != 1 || d.FDB[0].Remote.String() != "100.87.0.2" {
			t.Errorf("fdb %+v", d.FDB)
		}
		if len(d.NICs) != 1 || d.NICs[0].VMID != "vm-a" || d.NICs[0].Network != "nw-1" {
			t.Errorf("nics %+v", d.NICs)
		}
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "status", func() bool { return r.Status().Reconciled })
		if st := r.Status(); st.Endpoint != "192.0.2.1:51999" || st.WireGuard != "userspace" || !st.TunnelOffload || st.Error != "" {
			t.Errorf("status %+v", st)
		}
	})

	t.Run("EnsureNICs makes a new vm's taps at once and keeps them", func(t *testing.T) {
		nics := []messages.NICStatus{{NetworkID: "nw-1", IP: "10.10.0.6", PrefixLen: 24, MAC: "52:54:00:00:00:06"}}
		taps, err := r.EnsureNICs(context.Background(), "vm-b", nics)
		if err != nil || len(taps) != 1 || taps[0] != "tap-vm-b-0" {
			t.Fatalf("EnsureNICs = %v, %v", taps, err)
		}
		d, _ := fab.last()
		if len(d.NICs) != 2 {
			t.Fatalf("nics %+v", d.NICs)
		}
		// A heartbeat-driven reconcile keeps it though the manager does not
		// list it (yet).
		_, n := fab.last()
		r.SetDesired(desired())
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "another reconcile", func() bool { _, m := fab.last(); return m > n })
		if d, _ := fab.last(); len(d.NICs) != 2 {
			t.Fatalf("nics after a heartbeat %+v", d.NICs)
		}
		if err := r.ReleaseNICs(context.Background(), "vm-b"); err != nil {
			t.Fatal(err)
		}
		if d, _ := fab.last(); len(d.NICs) != 1 {
			t.Fatalf("nics after release %+v", d.NICs)
		}
	})

	t.Run("EnsureNICs on a network not on the node fails with network_unavailable", func(t *testing.T) {
		start := time.Now()
		_, err := r.EnsureNICs(context.Background(), "vm-c",
			[]messages.NICStatus{{NetworkID: "nw-other", IP: "10.30.0.6", PrefixLen: 24, MAC: "52:54:00:00:00:07"}})
		var me *messages.Error
		if !errors.As(err, &me) || me.Code != "network_unavailable" {
			t.Fatalf("err %v", err)
		}
		if time.Since(start) < 2*time.Second {
			t.Errorf("gave up after %s, before NetworkWait", time.Since(start))
		}
		_ = r.ReleaseNICs(context.Background(), "vm-c")
	})

	t.Run("failures are reported and logged once", func(t *testing.T) {
		fab.mu.Lock()
		fab.err = errors.New("boom")
		fab.mu.Unlock()
		r.SetDesired(desired())
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the error in status", func() bool { return r.Status().Error == "boom" })
		if r.Status().Reconciled {
			t.Error("reconciled despite the error")
		}
		fab.mu.Lock()
		fab.err = nil
		fab.mu.Unlock()
		r.SetDesired(desired())
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "recovery", func() bool { s := r.Status(); return s.Reconciled && s.Error == "" })
	})

	t.Run("an answer naming the held revision reconciles it again", func(t *testing.T) {
		if got := r.Revision(); got != "rev-1" {
			t.Fatalf("revision held %q", got)
		}
		_, n := fab.last()
		r.SetDesired(messages.DesiredState{Settings: messages.DefaultSettings(), OverlayRevision: "rev-1"})
		testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "a reconcile of the held state", func() bool { _, m := fab.last(); return m > n })
		if d, _ := fab.last(); len(d.Networks) != 1 || len(d.Peers) != 1 || len(d.FDB) != 1 {
			t.Fatalf("held state not reapplied: %+v", d)
		}
		// Another revision without its overlay is not ours to apply.
		_, n = fab.last()
		r.SetDesired(messages.DesiredState{Settings: messages.DefaultSettings(), OverlayRevision: "rev-other"})
		time.Sleep(20 * time.Millisecond)
		if _, m := fab.last(); m != n {
			t.Error("reconciled for a revision it does not hold")
		}
		if got := r.Revision(); got != "rev-1" {
			t.Errorf("revision held %q", got)
		}
	})

	t.Run("a bad desired state keeps the last good one", func(t *testing.T) {
		bad := desired()
		bad.Overlay.Revision, bad.OverlayRevision = "rev-bad", "rev-bad"
		bad.Overlay.Networks[0].CIDR = "nope"
		_, n := fab.last()
		r.SetDesired(bad)
		if s := r.Status(); s.Reconciled || s.Error == "" {
			t.Errorf("status %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
		if _, m := fab.last(); m != n {
			t.Error("a bad desired state was applied")
		}
		if got := r.Revision(); got != "rev-1" {
			t.Errorf("revision after a bad state %q: the control plane must send it again", got)
		}
	})
}

func TestParseTunnel(t *testing.T) {
	for _, c := range []struct{ in, sn, want string }{
		{"10.240.0.1", "10.240.0.0/12", "10.240.0.1/12"},
		{"10.240.0.1/32", "10.240.0.0/12", "10.240.0.1/12"},
		{"10.240.0.1/16", "10.240.0.0/12", "10.240.0.1/16"},
		{"100.87.0.1", "", "100.87.0.1/16"},
	} {
		got, err := parseTunnel(c.in, c.sn)
		if err != nil || got.String() != c.want {
			t.Errorf("parseTunnel(%q, %q) = %s, %v; want %s", c.in, c.sn, got, err, c.want)
		}
	}
}

// TestRunnerReportsHostConflicts checks a refused reconcile's conflicts and
// the host's prefixes reach the heartbeat, and that the conflicts clear
// once a reconcile succeeds.
func TestRunnerReportsHostConflicts(t *testing.T) {
	taken := []hostroutes.Entry{{Prefix: netip.MustParsePrefix("10.255.255.53/32"), Source: "resolver /etc/resolv.conf"}}
	conflict := hostroutes.Conflict{Claim: hostroutes.Claim{Prefix: netip.MustParsePrefix("10.240.0.0/12"), Use: "overlay supernet on oxwg0"}, Taken: taken[0]}
	fab := &fakeFabric{rep: &netfabric.Report{HostPrefixes: taken, Conflicts: []hostroutes.Conflict{conflict}},
		err: &netfabric.HostConflictError{Conflicts: []hostroutes.Conflict{conflict}}}
	r, err := New(Config{Fabric: fab, NICs: func() map[string][]messages.NICStatus { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if r.HostPrefixes() != nil || r.Status().Conflicts != nil {
		t.Fatal("host prefixes or conflicts before any reconcile")
	}
	r.SetDesired(desired())
	if _, err := r.reconcile(t.Context()); !errors.Is(err, netfabric.ErrHostConflict) {
		t.Fatalf("reconcile: %v", err)
	}
	st := r.Status()
	want := messages.HostConflict{Prefix: "10.240.0.0/12", Use: "overlay supernet on oxwg0", Taken: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}
	if st.Reconciled || len(st.Conflicts) != 1 || st.Conflicts[0] != want {
		t.Fatalf("status %+v", st)
	}
	if hp := r.HostPrefixes(); len(hp) != 1 || hp[0] != (messages.HostPrefix{Prefix: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}) {
		t.Fatalf("host prefixes %+v", hp)
	}
	fab.mu.Lock()
	fab.rep, fab.err = &netfabric.Report{HostPrefixes: taken}, nil
	fab.mu.Unlock()
	if _, err := r.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); !st.Reconciled || st.Conflicts != nil {
		t.Fatalf("status after a clean reconcile %+v", st)
	}
}
